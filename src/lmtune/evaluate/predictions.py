"""Predictions written beside the metrics, one JSON line per row, so a person can read what the model said."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.io import write_text

PREDICTIONS_DIR = "predictions"


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def take_predictions(metrics: dict[str, Any], folder: Path, name: str) -> Path | None:
    """Move a `predictions` list out of `metrics` into `folder/predictions/<name>.jsonl`; the metrics keep its path."""
    rows = metrics.pop("predictions", None)
    if rows is None:
        return None
    path = write_predictions(folder / PREDICTIONS_DIR / f"{name}.jsonl", rows)
    metrics["predictions_file"] = str(path.relative_to(folder))
    return path
