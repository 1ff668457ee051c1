"""The pre-training loop: transformers' Trainer (progress bar with rate and ETA, checkpoints with optimiser,
scheduler and RNG state, resume) with lmtune's optimiser choice and a validation-perplexity callback.

Trainer's own evaluation averages batch means; the callback measures perplexity the exact way
(perplexity.py) every `eval_every` steps, at the start and at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from lmtune.errors import LmtuneError
from lmtune.io import make_writable_dir, remove_made_folder
from lmtune.pretrain.config import LoopConfig, OptimConfig, OutputConfig

CHECKPOINTS = "checkpoints"
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"


def prepare_output(output: OutputConfig, resume: bool) -> Path:
    """The output folder, with the same rules as `lmtune train`: finished → overwrite or refuse; unfinished →
    resume or refuse."""
    out = Path(output.dir)
    if out.exists() and not out.is_dir():
        raise LmtuneError(f"{out} is a file, not a folder; set output.dir to a folder (it is created if missing)")
    if out.exists() and any(out.iterdir()):
        if output.overwrite and not resume:
            markers = (METRICS_FILE, LOG_FILE, CHECKPOINTS, "pretrain.yaml", "pretrain_continue.yaml")
            remove_made_folder(out, markers, "an lmtune pretrain output")
        elif (out / METRICS_FILE).is_file():
            raise LmtuneError(f"{out} holds a finished run; set output.overwrite=true or output.dir=<new folder>")
        elif not resume:
            raise LmtuneError(f"{out} holds an unfinished run; set train.resume=true to continue it, "
                              "output.overwrite=true to start over, or output.dir=<new folder>")
    return make_writable_dir(out, "output.dir")


def build_optimizer(model, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum; biases and norm weights get no weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


class JsonlLog(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        append_log(self.path, {"step": state.global_step, **(logs or {})})


def append_log(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


class PerplexityCallback(TrainerCallback):
    """Validation perplexity every `every` steps and at the end; appended to the log and kept in `history`."""

    def __init__(self, measure: Callable[[], dict[str, Any]], every: int, log_path: Path):
        self.measure, self.every, self.log_path = measure, every, log_path
        self.history: list[dict[str, Any]] = []

    def record(self, step: int) -> dict[str, Any]:
        started = time.perf_counter()
        result = {"step": step, **self.measure(), "eval_seconds": round(time.perf_counter() - started, 2)}
        self.history.append(result)
        append_log(self.log_path, {"validation": result})
        shown = {k: result[k] for k in ("perplexity", "word_perplexity") if k in result}
        print(f"step {step}: validation {shown}", flush=True)
        return result

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.record(state.global_step)


def training_arguments(cfg: LoopConfig, optim: OptimConfig, out: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.max_steps or -1,
        num_train_epochs=cfg.epochs,
        learning_rate=optim.lr,
        lr_scheduler_type=optim.schedule,
        warmup_steps=optim.warmup_steps,
        max_grad_norm=optim.max_grad_norm,
        weight_decay=optim.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.checkpoint_every,
        save_total_limit=2,
        eval_strategy="no",
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
    )


def run_loop(model, train_dataset, collator, loop: LoopConfig, optim: OptimConfig, out: Path,
             measure: Callable[[], dict[str, Any]] | None, callbacks: list[TrainerCallback] | None = None,
             initial: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `model` in place; return the loss log, the validation history and timings. `initial`: the step-0
    validation result when the caller measured it already (continued pre-training's "before")."""
    if loop.threads:
        torch.set_num_threads(loop.threads)
    log_path = out / LOG_FILE
    optimizer = build_optimizer(model, optim)
    extra = list(callbacks or [])
    ppl = PerplexityCallback(measure, loop.eval_every, log_path) if measure else None
    trainer = Trainer(
        model=model, args=training_arguments(loop, optim, out), train_dataset=train_dataset, data_collator=collator,
        optimizers=(optimizer, None), callbacks=[JsonlLog(log_path), *([ppl] if ppl else []), *extra],
    )
    checkpoint = None
    if loop.resume and (out / CHECKPOINTS).is_dir():
        checkpoint = get_last_checkpoint(str(out / CHECKPOINTS))
    if loop.resume and checkpoint is None:
        print(f"train.resume: no checkpoint in {out} yet; starting from the beginning")
    if ppl and checkpoint is None:
        if initial is None:
            ppl.record(0)
        else:
            ppl.history.append({"step": 0, **initial})
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    final = ppl.record(trainer.state.global_step) if ppl else None
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return {
        "global_step": trainer.state.global_step, "train_seconds": round(seconds, 2),
        "train_loss": round(result.training_loss, 5), "losses": losses,
        "validation": final, "validation_history": ppl.history if ppl else [],
        "resumed_from": os.path.basename(checkpoint) if checkpoint else None, "threads": torch.get_num_threads(),
    }


def finish(out: Path, keep_checkpoints: bool = False) -> None:
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
