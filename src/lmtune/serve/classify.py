"""Classification and embedding requests: one body pass over the rows of several jobs (each row with its adapter),
then each classification row's own head on its pooled text positions, or an embedding row's pooled vector."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lmtune.models.pooling import pool

if TYPE_CHECKING:  # the engine imports this module
    from lmtune.serve.engine import Engine


def head_layers_of(adapter) -> int:
    """How many last hidden layers the adapter's head reads (1 without a head: embeddings read the top layer)."""
    return adapter.head.layers if adapter is not None and adapter.head is not None else 1


def top_layers(hidden: torch.Tensor, layers: int, hidden_size: int) -> torch.Tensor:
    """The last `layers` layers of hidden states that hold several concatenated (the top one last)."""
    return hidden[..., hidden.size(-1) - layers * hidden_size :]


def head_logits(adapter, hidden: torch.Tensor, mask: torch.Tensor, hidden_size: int) -> torch.Tensor:
    head = adapter.head
    features = pool(top_layers(hidden, head.layers, hidden_size), mask, head.pooling).float()
    return features @ head.weight.T + head.bias


def embedding(engine: Engine, adapter, hidden: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """One row's embedding: its text positions pooled the way the adapter's head was trained to read them, or the
    base model's way (sentence-transformers' pooling, then its normalisation when it has one); the top layer."""
    mode = adapter.head.pooling if adapter is not None and adapter.head is not None else engine.pooling
    vector = pool(top_layers(hidden, 1, engine.hidden_size), mask, mode).float()[0]
    return (torch.nn.functional.normalize(vector, dim=0) if engine.normalize_embeddings else vector).tolist()


def classify_rows(engine: Engine, parts) -> None:
    """One pass over `parts` [(job, its next rows)]; each job answers once all its rows are done. If the pass
    fails, each job is retried alone so that only the job that causes the error fails."""
    rows = [row for _, job_rows in parts for row in job_rows]
    adapters = [job.adapter for job, job_rows in parts for _ in job_rows]
    try:
        hidden, mask = engine.text_hidden_states(rows, adapters)
        offset, answers = 0, []
        for job, job_rows in parts:
            for row in range(offset, offset + len(job_rows)):
                h, m = hidden[row : row + 1], mask[row : row + 1]
                answers.append(embedding(engine, job.adapter, h, m) if job.embed else
                               _label(job.adapter.head.labels, head_logits(job.adapter, h, m, engine.hidden_size)[0]))
            offset += len(job_rows)
    except Exception as err:  # noqa: BLE001 - the job fails, the server goes on
        if len(parts) > 1:
            for part in parts:
                classify_rows(engine, [part])
            return
        job = parts[0][0]
        job.failed = True
        job.on_done(err)
        return
    offset = 0
    for job, job_rows in parts:
        job.results.extend(answers[offset : offset + len(job_rows)])
        offset += len(job_rows)
        if job.remaining == 0:
            job.on_done(job.results)
    engine.observer.on_step(len(rows), 0, len(rows))


def _label(labels: list[str], logits: torch.Tensor) -> dict:
    probs = torch.softmax(logits, dim=-1).tolist()
    best = max(range(len(labels)), key=probs.__getitem__)
    return {"label": labels[best], "probabilities": dict(zip(labels, probs))}


def forward_heads(engine: Engine, token_rows, adapters, reference: bool = False) -> list[torch.Tensor]:
    """Each row's head logits; pooling sees only the row's own text positions."""
    hidden, mask = engine.text_hidden_states(token_rows, adapters, reference)
    return [head_logits(a, hidden[i : i + 1], mask[i : i + 1], engine.hidden_size)[0] for i, a in enumerate(adapters)]
