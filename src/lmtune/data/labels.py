"""The label set: read from data or config, and checked in every split before training starts."""

from __future__ import annotations

from collections import Counter

import datasets

from lmtune.errors import LmtuneError


def _natural_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def label_values(table: datasets.Dataset, column: str, split: str) -> list[str]:
    if column not in table.column_names:
        raise LmtuneError(
            f"{split} data has no label column {column!r}; its columns are {table.column_names}. Set data.label_column."
        )
    values = table[column]
    missing = sum(v is None for v in values)
    if missing:
        raise LmtuneError(f"{split} data has {missing} rows with no label in column {column!r}; fill or drop them")
    return [str(v) for v in values]


def resolve_label_set(train_labels: list[str], configured: list[str] | None) -> list[str]:
    if not train_labels:
        raise LmtuneError("the training data is empty; give a file with at least two labelled rows per class")
    counts = Counter(train_labels)
    labels = list(configured) if configured else sorted(counts, key=_natural_key)
    if configured and len(set(configured)) != len(configured):
        raise LmtuneError(f"data.labels lists a label twice: {configured}")
    if len(counts) < 2:
        raise LmtuneError(
            f"the training data has only one class ({next(iter(counts))!r}); classification needs at least two"
        )
    return labels


def check_labels(values: list[str], label_set: list[str], split: str) -> None:
    known = set(label_set)
    unknown = Counter(v for v in values if v not in known)
    if unknown:
        shown = ", ".join(f"{label!r} ({n} rows)" for label, n in unknown.most_common(5))
        raise LmtuneError(
            f"{split} data has labels outside the label set {label_set}: {shown}. "
            "Fix the data, or add them to data.labels."
        )
