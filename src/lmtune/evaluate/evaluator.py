"""Evaluate a task model on a split: the same code at the end of training and in `lmtune eval`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lmtune.device import to_model_device


@torch.no_grad()
def evaluate_split(model, task, table, batch_size: int = 64) -> dict[str, Any]:
    """Task metrics plus the mean loss on `table` (raw rows; encoded here)."""
    encoded = task.encode(table, model.tokenizer)
    loader = DataLoader(encoded, batch_size=batch_size, collate_fn=task.collator(model.tokenizer))
    model.eval()
    all_logits, all_labels, loss_sum = [], [], 0.0
    for batch in loader:
        output = model(**to_model_device(batch, model))
        loss_sum += float(output.loss) * len(batch["labels"])
        all_logits.append(output.logits.float().cpu().numpy())
        all_labels.append(batch["labels"].cpu().numpy())
    metrics = task.compute_metrics(np.concatenate(all_logits), np.concatenate(all_labels))
    metrics["loss"] = loss_sum / len(encoded)
    metrics["rows"] = len(encoded)
    return metrics


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers Trainer can log and compare (drops the confusion matrix and undefined values)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
