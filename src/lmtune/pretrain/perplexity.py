"""Perplexity on held-out text: exp(total negative log-likelihood / number of predicted tokens).

Causal LMs: the text's tokens are cut into windows of `seq_len` that overlap by one token, so every token but the
first is predicted exactly once, always with the same amount of context a training block gives. The sum of the
NLLs (not a mean of batch means) is divided by the count, so padding of a short last window changes nothing.
Per-word perplexity divides the same total NLL by the number of whitespace words instead of tokens: it compares
models with different tokenizers (WikiText-2 is reported per word for that reason).

Masked LMs (BERT): a seeded 15% of tokens is replaced by [MASK] and perplexity is taken over those positions
(the same mask every time, so numbers compare across checkpoints); it is not comparable to a causal LM's.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from lmtune.device import model_device, to_device
from lmtune.pretrain.packing import document_separator, encode_text


def eval_token_stream(tokenizer, texts: Iterable[str]) -> list[int]:
    """All held-out tokens, documents joined by the end-of-document token (as in training)."""
    separator = document_separator(tokenizer)
    ids: list[int] = []
    for text in texts:
        ids.extend(encode_text(tokenizer, text))
        if separator is not None:
            ids.append(separator)
    return ids


def causal_windows(ids: list[int], seq_len: int) -> list[list[int]]:
    """Windows of `seq_len` overlapping by one token: window k+1 starts with the last token of window k."""
    if len(ids) < 2:
        return []
    step = seq_len - 1
    return [ids[start : start + seq_len] for start in range(0, len(ids) - 1, step)]


def _batches(windows: list[list[int]], batch_size: int, pad_id: int):
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        length = max(len(w) for w in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, window in enumerate(chunk):
            ids[i, : len(window)] = torch.tensor(window)
            mask[i, : len(window)] = 1
        yield ids, mask


@torch.no_grad()
def causal_nll(model, windows: list[list[int]], batch_size: int = 8, pad_id: int = 0) -> tuple[float, int]:
    """(sum of NLL, predicted tokens) over the windows; position t predicts token t+1 of the same window."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = model_device(model)
    try:
        for ids, mask in _batches(windows, batch_size, pad_id):
            ids, mask = to_device(ids, device), to_device(mask, device)
            # The text's positions are the last ones: PEFT's prompt methods prepend virtual tokens to the logits.
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.size(1):][:, :-1].float()
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    return total, count


def mask_positions(windows: list[list[int]], probability: float, seed: int, special_ids: set[int]) -> list[list[bool]]:
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for window in windows:
        draw = torch.rand(len(window), generator=generator) < probability
        masks.append([bool(d) and tok not in special_ids for d, tok in zip(draw.tolist(), window)])
    return masks


@torch.no_grad()
def masked_nll(model, windows: list[list[int]], mask_id: int, probability: float, seed: int, special_ids: set[int],
               batch_size: int = 8, pad_id: int = 0) -> tuple[float, int]:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = model_device(model)
    masks = mask_positions(windows, probability, seed, special_ids)
    try:
        for start in range(0, len(windows), batch_size):
            chunk, chunk_masks = windows[start : start + batch_size], masks[start : start + batch_size]
            (ids, attention), = list(_batches(chunk, len(chunk), pad_id))
            chosen = torch.zeros_like(ids, dtype=torch.bool)
            for i, m in enumerate(chunk_masks):
                chosen[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
            inputs = ids.masked_fill(chosen, mask_id)
            logits = model(**to_device({"input_ids": inputs, "attention_mask": attention}, device)).logits.float()
            targets = to_device(ids.masked_fill(~chosen, -100), device)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int(chosen.sum())
    finally:
        model.train(was_training)
    return total, count


def perplexity_report(model, tokenizer, texts: list[str], seq_len: int, objective: str = "causal",
                      batch_size: int = 8, mlm_probability: float = 0.15, seed: int = 0) -> dict[str, Any]:
    """Perplexity of `model` on `texts`: per token, and (causal) per whitespace word."""
    ids = eval_token_stream(tokenizer, texts)
    words = sum(len(t.split()) for t in texts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if objective == "masked":
        windows = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
        specials = set(tokenizer.all_special_ids)
        nll, count = masked_nll(model, windows, tokenizer.mask_token_id, mlm_probability, seed, specials, batch_size, pad_id)
        return {"objective": "masked", "masked_tokens": count, "nll": round(nll / max(count, 1), 5),
                "perplexity": _exp(nll / max(count, 1)), "tokens": len(ids), "words": words}
    nll, count = causal_nll(model, causal_windows(ids, seq_len), batch_size, pad_id)
    return {
        "objective": "causal", "tokens": len(ids), "predicted_tokens": count, "words": words,
        "nll": round(nll / max(count, 1), 5), "perplexity": _exp(nll / max(count, 1)),
        "word_perplexity": _exp(nll / max(words, 1)), "tokens_per_word": round(len(ids) / max(words, 1), 4),
    }


def _exp(value: float) -> float:
    return round(math.exp(value), 4) if value < 700 else float("inf")
