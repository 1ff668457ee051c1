"""The training log (`train_log.jsonl`): one JSON line per Trainer log entry, appended as it happens, so a killed
run keeps its history. `lmtune train` and `lmtune pretrain` both write it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def append_log(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


class JsonlLog(TrainerCallback):
    """Append every Trainer log entry (loss, learning rate, evaluation) to the run's log."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # Trainer logs on every rank, the same numbers (averaged over ranks)
            return
        append_log(self.path, {"step": state.global_step, "epoch": state.epoch, **(logs or {})})
