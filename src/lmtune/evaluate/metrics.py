"""Classification metrics from scikit-learn, under the names metrics.json uses."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, f1_score, roc_auc_score


def classification_metrics(label_ids: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """accuracy, macro-F1, ROC AUC and PR AUC (binary: of the second label; more classes: one-vs-rest macro over
    the classes present), and the confusion matrix (rows: true label, columns: predicted, in label-set order)."""
    predicted = probs.argmax(axis=-1)
    every_class = list(range(len(labels)))
    result: dict[str, Any] = {
        "accuracy": float(accuracy_score(label_ids, predicted)),
        "macro_f1": float(f1_score(label_ids, predicted, average="macro", labels=every_class, zero_division=0)),
        "roc_auc": None,
        "pr_auc": None,
        "confusion_matrix": confusion_matrix(label_ids, predicted, labels=every_class).tolist(),
    }
    present = sorted(set(label_ids.tolist()))
    if len(present) < 2:
        return result  # ranking metrics are undefined with one class in the split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(labels) == 2:
            result["roc_auc"] = float(roc_auc_score(label_ids, probs[:, 1]))
            result["pr_auc"] = float(average_precision_score(label_ids, probs[:, 1]))
        else:
            onehot = np.eye(len(labels))[label_ids][:, present]
            result["roc_auc"] = float(roc_auc_score(onehot, probs[:, present], average="macro"))
            result["pr_auc"] = float(average_precision_score(onehot, probs[:, present], average="macro"))
    return result
