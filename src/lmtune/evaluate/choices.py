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

from lmtune.device import model_device, to_device

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
    lengths: np.ndarray
    """[items, choices] each choice's length in characters, without the space before it: the harness's acc_norm
    divisor (`len(choice)` in lm_eval/api/task.py; equal to bytes for ASCII text)."""

    def best(self, normalised: bool) -> np.ndarray:
        scores = self.sums / np.maximum(self.lengths, 1) if normalised else self.sums
        return scores.argmax(axis=1)

    def loss(self, rows: list[int], gold: np.ndarray, kind: str) -> float:
        """The training loss on these items: cross-entropy over the choices, or the gold tokens' mean NLL."""
        sums = self.sums[rows]
        if kind == "lm":
            picked = np.arange(len(rows)), gold
            return float(-sums[picked].sum() / max(self.counts[rows][picked].sum(), 1))
        top = sums.max(axis=1, keepdims=True)  # absent choices are -inf: exp gives 0
        log_norm = top[:, 0] + np.log(np.exp(sums - top).sum(axis=1))
        return float((log_norm - sums[np.arange(len(rows)), gold]).mean())


@torch.no_grad()
def score_rows(body, rows: list[EncodedRow], owners: list[tuple[int, int, int]], items: int, choices: int,
               pad_token_id: int, batch_size: int, progress: bool = False, share_context: bool = False) -> ScoredRows:
    """`owners[k]` = (item, choice, length) of `rows[k]`. The body is any causal LM (PEFT-wrapped or not).

    `share_context`: run each question's context once and its choices from the KV cache (`shared_context_scores`),
    for bodies whose cached forward is exact (the adapter's form decodes `cached`: LoRA, bottleneck, IA3, full,
    freeze). Choices with a context of their own (WinoGrande) and bodies that return no cache take full rows."""
    scored = ScoredRows(np.full((items, choices), -np.inf), np.zeros((items, choices), dtype=np.int64),
                        np.ones((items, choices), dtype=np.int64))
    was_training = body.training
    body.eval()
    bar = tqdm(total=len(rows), desc="scoring choices", unit="row", disable=not progress)
    full = list(range(len(rows)))
    if share_context:
        full = shared_context_scores(body, rows, owners, scored, pad_token_id, batch_size, bar)
    _full_row_scores(body, rows, owners, full, scored, pad_token_id, batch_size, bar)
    bar.close()
    body.train(was_training)
    return scored


def _record(scored: ScoredRows, owner: tuple[int, int, int], total: float, count: int) -> None:
    item, choice, size = owner
    scored.sums[item, choice], scored.counts[item, choice], scored.lengths[item, choice] = total, count, size


def _full_row_scores(body, rows, owners, indices: list[int], scored: ScoredRows, pad: int, batch_size: int, bar) -> None:
    """Each (context, choice) row as one right-padded forward: exact for every strategy (the reference path)."""
    order = sorted(indices, key=lambda k: -len(rows[k].input_ids))
    device = model_device(body)
    vocab = body.get_output_embeddings().weight.shape[0]
    start = 0
    while start < len(order):
        width = len(rows[order[start]].input_ids)
        take = max(1, min(batch_size, LOGIT_BUDGET // (width * vocab)))
        batch = [rows[k] for k in order[start:start + take]]
        ids, mask, target = (to_device(t, device) for t in pad_right([r.input_ids for r in batch], [r.target_mask for r in batch], pad))
        row_sums, row_counts = choice_logprobs(body, ids, mask, target)
        for k, total, count in zip(order[start:start + take], row_sums.tolist(), row_counts.tolist()):
            _record(scored, owners[k], total, count)
        bar.update(len(batch))
        start += take


def shared_context_scores(body, rows, owners, scored: ScoredRows, pad: int, batch_size: int, bar) -> list[int]:
    """Score choices after a context run once per question; returns the rows left for full forwards.

    Contexts are left-padded with explicit positions (0.. per row), so each question's cache ends where its
    choices begin; the cache is repeated once per choice and the choices, right-padded, continue from it with
    positions counting on. The first choice token's log-probability comes from the context's last position."""
    groups: dict[int, list[int]] = {}
    for k, (item, _, _) in enumerate(owners):
        groups.setdefault(item, []).append(k)
    shared, rest = [], []
    for members in groups.values():
        contexts = {tuple(_split(rows[k])[0]) for k in members}
        (shared if len(contexts) == 1 else rest).append(members)
    shared.sort(key=lambda members: -len(rows[members[0]].input_ids))
    device = model_device(body)
    start = 0
    while start < len(shared):
        take, count = 0, 0
        while start + take < len(shared) and (take == 0 or count + len(shared[start + take]) <= batch_size):
            count += len(shared[start + take])
            take += 1
        if not _score_group_batch(body, rows, owners, shared[start:start + take], scored, pad, device):
            return [k for members in shared[start:] + rest for k in members]  # no cache from this model
        bar.update(count)
        start += take
    return [k for members in rest for k in members]


def _split(row: EncodedRow) -> tuple[list[int], list[int]]:
    """A row's context tokens and its scored continuation (the target tokens are its end)."""
    cut = len(row.input_ids) - sum(row.target_mask)
    return row.input_ids[:cut], row.input_ids[cut:]


def _score_group_batch(body, rows, owners, questions: list[list[int]], scored: ScoredRows, pad: int, device) -> bool:
    contexts = [_split(rows[members[0]])[0] for members in questions]
    width = max(len(c) for c in contexts)
    ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    out = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    if getattr(out, "cache", None) is None:  # transformers 5 names it `cache` (was past_key_values)
        return False
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts each choice's first token
    repeat = torch.tensor([q for q, members in enumerate(questions) for _ in members], device=device)
    cache = out.cache
    cache.reorder_cache(repeat)  # one copy of its question's context per choice
    members = [k for group in questions for k in group]
    targets = [_split(rows[k])[1] for k in members]
    # Every continuation token is scored, so the attention mask of the choices is also their target mask.
    target_ids, target_mask, _ = (to_device(t, device) for t in pad_right(targets, [[1] * len(t) for t in targets], pad))
    target_width = target_ids.shape[1]
    lengths = mask.sum(dim=1)[repeat]
    logits = body(input_ids=target_ids, attention_mask=torch.cat([mask[repeat], target_mask], dim=1),
                  position_ids=lengths[:, None] + torch.arange(target_width, device=device), cache=cache).logits
    following = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, target_ids[:, 1:, None]).squeeze(-1)
    totals = first[repeat].gather(-1, target_ids[:, :1]).squeeze(-1) + (following * target_mask[:, 1:]).sum(dim=1)
    for k, total, count in zip(members, totals.tolist(), target_mask.sum(dim=1).tolist()):
        _record(scored, owners[k], total, count)
    return True


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


def pad_right(ids: list[list[int]], target_masks: list[list[int]], pad: int):
    """(input_ids, attention_mask, target_mask) tensors, each row right-padded to the longest (scoring and the
    training collator share it: prompt methods put their virtual tokens in front, so padding must come last)."""
    width = max(len(row) for row in ids)
    return (torch.tensor([row + [pad] * (width - len(row)) for row in ids]),
            torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
            torch.tensor([mask + [0] * (width - len(mask)) for mask in target_masks]))
