"""Classification requests: one body pass over the rows of several jobs (each row with its adapter), then each
row's own head on its pooled text positions."""

from __future__ import annotations

import torch

from lmtune.models.pooling import pool
from lmtune.serve.inputs import build_inputs, gather_text
from lmtune.serve.mixed import BatchPlan


def head_logits(adapter, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    head = adapter.head
    return pool(hidden, mask, head.pooling).float() @ head.weight.T + head.bias


def classify_rows(engine, jobs) -> None:
    rows, adapters, owners = [], [], []
    for job_index, job in enumerate(jobs):
        limit = job.adapter.max_length or engine.context
        for text in job.texts:
            rows.append(engine.tokenize(text, truncation=True, max_length=limit))
            adapters.append(job.adapter)
            owners.append(job_index)
    try:
        logits = forward_heads(engine, rows, adapters)
    except Exception as err:  # noqa: BLE001 - the jobs fail, the server goes on
        for job in jobs:
            job.on_done(err)
        return
    results: list[list[dict]] = [[] for _ in jobs]
    for row, owner in enumerate(owners):
        labels = adapters[row].head.labels
        probs = torch.softmax(logits[row], dim=-1).tolist()
        best = max(range(len(labels)), key=probs.__getitem__)
        results[owner].append({"label": labels[best], "probabilities": dict(zip(labels, probs))})
    for job, result in zip(jobs, results):
        job.on_done(result)
    engine.observer.on_step(len(rows), 0, len(rows))


def forward_heads(engine, token_rows, adapters, reference: bool = False) -> list[torch.Tensor]:
    """Each row's head logits. Decoders pad on the left, encoders on the right, as each was trained to be read;
    pooling sees only the row's own text positions."""
    inputs = build_inputs(engine.model.get_input_embeddings(), token_rows, adapters,
                          left_pad=engine.base_kind == "decoder", pad_id=engine.tokenizer.pad_token_id)
    with engine.hooks.active(BatchPlan(adapters, reference)):
        hidden = engine.body(**inputs.model_kwargs(), use_cache=False).last_hidden_state
    text_hidden = gather_text(hidden, inputs)
    return [head_logits(a, text_hidden[i : i + 1], inputs.text_mask[i : i + 1])[0] for i, a in enumerate(adapters)]
