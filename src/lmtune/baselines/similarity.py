"""Zero- and few-shot classification with an untuned *encoder*: it cannot continue a prompt, but it embeds text.
An input gets the label whose embedding is nearest (cosine): the label word (or its verbaliser phrase) zero-shot,
the mean embedding of that label's demonstrations with k shots (a prototype classifier). This is how sentence
encoders such as MiniLM are used without training, so it is their fair "prompting" baseline."""

from __future__ import annotations

import numpy as np
import torch

from lmtune.device import to_model_device
from lmtune.models.pooling import pool

SCALE = 20.0
"""Cosines times this before the softmax (sentence-transformers' contrastive scale), so probabilities are not flat."""


@torch.no_grad()
def embed(backbone, texts: list[tuple[str, str | None]], max_length: int, batch_size: int) -> torch.Tensor:
    """Unit-length pooled embeddings, pooled the way the backbone was trained to be read."""
    tokenizer, body = backbone.tokenizer, backbone.body
    vectors = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        firsts, seconds = [t for t, _ in chunk], [p for _, p in chunk]
        batch = tokenizer(firsts, seconds if any(p is not None for p in seconds) else None, padding=True,
                          truncation=True, max_length=max_length, return_tensors="pt")
        batch = to_model_device(dict(batch), body)
        hidden = body(**batch).last_hidden_state
        vectors.append(torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], backbone.pooling).float(), dim=-1))
    return torch.cat(vectors)


def prototypes(backbone, labels: list[str], words: dict[str, str], demos: list[tuple[dict, str]], max_length: int,
               batch_size: int) -> torch.Tensor:
    """One unit vector per label: the mean of its demonstrations' embeddings, else its word's embedding."""
    word_vectors = embed(backbone, [(words.get(label, label), None) for label in labels], max_length, batch_size)
    rows = []
    for index, label in enumerate(labels):
        mine = [(d["text"], d["pair"]) for d, gold in demos if gold == label]
        centre = embed(backbone, mine, max_length, batch_size).mean(dim=0) if mine else word_vectors[index]
        rows.append(torch.nn.functional.normalize(centre, dim=-1))
    return torch.stack(rows)


def similarity_scores(backbone, centres: torch.Tensor, rows: list[dict], max_length: int, batch_size: int) -> np.ndarray:
    vectors = embed(backbone, [(r["text"], r["pair"]) for r in rows], max_length, batch_size)
    return (SCALE * vectors @ centres.T).cpu().numpy()
