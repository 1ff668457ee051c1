"""Seeded, stratified splits and samples."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
from sklearn.model_selection import train_test_split

from lmtune.errors import LmtuneError


@dataclass
class Splits:
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None = None


def stratified_indices(labels: list[str], size: int | float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held_out) indices; `size` is the held-out count or fraction. Falls back to a plain split when a
    class is too small to stratify."""
    indices = list(range(len(labels)))
    try:
        kept, held = train_test_split(indices, test_size=size, random_state=seed, stratify=labels)
    except ValueError:
        kept, held = train_test_split(indices, test_size=size, random_state=seed)
    return sorted(kept), sorted(held)


def split_off_validation(table: datasets.Dataset, labels: list[str], fraction: float, seed: int):
    if len(table) < 4:
        raise LmtuneError(f"the training data has {len(table)} rows; too few to split off validation (give data.validation)")
    kept, held = stratified_indices(labels, fraction, seed)
    return table.select(kept), table.select(held)


def stratified_sample(table: datasets.Dataset, labels: list[str], count: int, seed: int) -> datasets.Dataset:
    if count >= len(table):
        return table
    _, sample = stratified_indices(labels, count, seed)
    return table.select(sample)
