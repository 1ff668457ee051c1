"""Batched log-likelihood scoring of (context, continuation) rows: what multiple-choice evaluation, the prompting
baseline and `lmtune eval` share.

Rows are sorted by length (longest first, so a batch that does not fit fails at once, not at the end) and
right-padded: a causal model's logits at a real position never see the padding after it, and prompt methods put
their virtual tokens in front. A batch holds at most `batch_size` rows and about LOGIT_BUDGET logit values (the
vocabulary is wide: 49k for SmolLM2, so 64 rows of 256 tokens would be 3 GB of float32 logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

LOGIT_BUDGET = 1 << 27  # values (512 MB of float32)


class EncodedRow(Protocol):
    input_ids: list[int]
    target_mask: list[int]


@dataclass
class ScoredRows:
    sums: np.ndarray
    """[items, choices] summed log-probability of each choice's tokens (-inf where an item has fewer choices)."""
    counts: np.ndarray
    """[items, choices] how many tokens were scored."""
    nbytes: np.ndarray
    """[items, choices] each continuation's length in UTF-8 bytes (the harness's acc_norm divisor)."""

    def best(self, normalised: bool) -> np.ndarray:
        scores = self.sums / np.maximum(self.nbytes, 1) if normalised else self.sums
        return scores.argmax(axis=1)

    def loss(self, rows: list[int], gold: np.ndarray, kind: str) -> float:
        """The training loss on these items: cross-entropy over the choices, or the gold tokens' mean NLL."""
        sums = self.sums[rows]
        if kind == "lm":
            picked = np.arange(len(rows)), gold
            return float(-sums[picked].sum() / max(self.counts[rows][picked].sum(), 1))
        finite = np.where(np.isfinite(sums), sums, -np.inf)
        top = finite.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(finite - top).sum(axis=1))
        return float((log_norm - sums[np.arange(len(rows)), gold]).mean())


@torch.no_grad()
def score_rows(body, rows: list[EncodedRow], owners: list[tuple[int, int, int]], items: int, choices: int,
               pad_token_id: int, batch_size: int, progress: bool = False) -> ScoredRows:
    """`owners[k]` = (item, choice, bytes) of `rows[k]`. The body is any causal LM (PEFT-wrapped or not)."""
    sums = np.full((items, choices), -np.inf)
    counts = np.zeros((items, choices), dtype=np.int64)
    nbytes = np.ones((items, choices), dtype=np.int64)
    order = sorted(range(len(rows)), key=lambda k: -len(rows[k].input_ids))
    device = next(body.parameters()).device
    was_training = body.training
    body.eval()
    vocab = body.get_output_embeddings().weight.shape[0]
    bar = tqdm(total=len(rows), desc="scoring choices", unit="row", disable=not progress)
    start = 0
    while start < len(order):
        width = len(rows[order[start]].input_ids)
        take = max(1, min(batch_size, LOGIT_BUDGET // (width * vocab)))
        batch = [rows[k] for k in order[start:start + take]]
        ids, mask, target = (torch.tensor(t, device=device) for t in _padded(batch, width, pad_token_id))
        row_sums, row_counts = choice_logprobs(body, ids, mask, target)
        for k, s, c in zip(order[start:start + take], row_sums.tolist(), row_counts.tolist()):
            item, choice, size = owners[k]
            sums[item, choice], counts[item, choice], nbytes[item, choice] = s, c, size
        bar.update(len(batch))
        start += take
    bar.close()
    body.train(was_training)
    return ScoredRows(sums, counts, nbytes)


def choice_logprobs(body, input_ids, attention_mask, target_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of the tokens marked in `target_mask` (right-padded rows), and how
    many tokens that is. Only the target positions go through log-softmax: the vocabulary is wide."""
    logits = body(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, -input_ids.shape[1]:]  # prompt methods prepend virtual positions
    targets = target_mask[:, 1:].bool()
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets)[targets]
    picked = torch.log_softmax(logits[:, :-1][targets].float(), dim=-1)
    token_logprobs = picked.gather(-1, input_ids[:, 1:][targets][:, None]).squeeze(-1)
    sums = torch.zeros(input_ids.shape[0], device=logits.device).index_add(0, rows, token_logprobs)
    return sums, targets.sum(dim=1)


def _padded(batch: list[EncodedRow], width: int, pad: int):
    ids = [r.input_ids + [pad] * (width - len(r.input_ids)) for r in batch]
    mask = [[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in batch]
    target = [r.target_mask + [0] * (width - len(r.target_mask)) for r in batch]
    return ids, mask, target
