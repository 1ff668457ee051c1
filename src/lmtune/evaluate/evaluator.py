"""Evaluate a task model on a split: the same code at the end of training and in `lmtune eval`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmtune.device import to_model_device
from lmtune.evaluate.generation import length_batches


@torch.no_grad()
def evaluate_split(model, task, table, batch_size: int = 64) -> dict[str, Any]:
    """Task metrics plus the mean loss on `table` (raw rows; encoded here). Rows are batched by length (longest
    first, so little compute goes to padding) and the logits put back in the table's order."""
    encoded = task.encode(table, model.tokenizer).to_list()
    batches = length_batches([len(row["input_ids"]) for row in encoded], batch_size, equal_lengths=False)
    collate = task.collator(model.tokenizer)
    model.eval()
    all_logits, all_labels, loss_sum = [], [], 0.0
    for rows in batches:
        batch = collate([encoded[i] for i in rows])
        output = model(**to_model_device(batch, model))
        loss_sum += float(output.loss) * len(batch["labels"])
        all_logits += list(output.logits.float().cpu().numpy())
        all_labels += list(batch["labels"].cpu().numpy())
    back = np.argsort([i for rows in batches for i in rows])
    logits, labels = np.stack(all_logits)[back], np.stack(all_labels)[back]
    metrics = task.compute_metrics(logits, labels)
    metrics["loss"] = loss_sum / len(encoded)
    metrics["rows"] = len(encoded)
    return metrics


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers Trainer can log and compare (drops the confusion matrix and undefined values)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
