"""The training log (`train_log.jsonl`): one JSON line per Trainer log entry, appended as it happens, so a killed
run keeps its history. `lmtune train` and `lmtune pretrain` both write it; and the one-line-per-epoch output a log
file gets instead of progress bars."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback


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


class EpochLines(TrainerCallback):
    """What a log file gets instead of progress bars and Trainer's raw dicts: one line per evaluation (per epoch
    by default; per epoch's end when nothing is evaluated) and one at the end."""

    def __init__(self):
        self.started = time.perf_counter()
        self.train_loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_loss = float(logs["loss"])

    def _where(self, args, state) -> str:
        epochs = f"epoch {round(state.epoch or 0, 2):g}/{args.num_train_epochs:g}" if args.max_steps <= 0 else "steps"
        return f"{epochs} (step {state.global_step}/{state.max_steps}, {time.perf_counter() - self.started:.0f} s)"

    def _loss(self) -> str:
        return f"train loss {self.train_loss:.4f}" if self.train_loss is not None else "train loss -"

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        numbers = {k.removeprefix("eval_"): v for k, v in (metrics or {}).items() if isinstance(v, float)
                   and not k.endswith(("runtime", "per_second", "epoch"))}
        first = args.metric_for_best_model or "loss"  # the checkpoint metric leads
        order = sorted(numbers, key=lambda k: (k != first, k != "loss"))
        scores = ", ".join(f"{k} {numbers[k]:.4f}" for k in order)
        print(f"{self._where(args, state)}: {self._loss()}; validation {scores}", flush=True)

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.eval_strategy == "no":
            print(f"{self._where(args, state)}: {self._loss()}", flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        best = f"; kept {Path(state.best_model_checkpoint).name} (validation {args.metric_for_best_model} " \
               f"{state.best_metric:.4f})" if args.load_best_model_at_end and state.best_model_checkpoint else ""
        print(f"trained {state.global_step} steps in {time.perf_counter() - self.started:.0f} s{best}", flush=True)


def quiet_output(trainer) -> None:
    """Off a terminal: Trainer's PrinterCallback (a raw dict per log entry) gives way to one line per epoch."""
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(EpochLines())


def quiet_libraries() -> None:
    """Off a terminal: no progress bars from the libraries either (datasets' "Map", transformers' "Loading
    weights"; each is a redraw per update in a log file), nor a warning repeated at every evaluation."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    # Repeated at every evaluation on a machine without an accelerator; says nothing about the run.
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true but no accelerator")
