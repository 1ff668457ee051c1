"""What `pretrain model` and `pretrain continue` share: the output folder under `lmtune train`'s rules
(train/rundir.py), the optimiser choice, and transformers' Trainer with a validation-perplexity callback.

Trainer's own evaluation averages batch means; the callback measures perplexity the exact way (perplexity.py)
every `eval_steps` steps, at the start and at the end. The log is `lmtune train`'s (train/log.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from pydantic import ValidationError
from transformers import Trainer, TrainerCallback, TrainingArguments

from lmtune.device import trainer_precision
from lmtune.errors import LmtuneError
from lmtune.io import write_json, write_yaml
from lmtune.pretrain.config import PretrainTrainConfig
from lmtune.train import rundir
from lmtune.train.checkpoints import newest_complete
from lmtune.train.log import JsonlLog, append_log, quiet_output

# Not rundir.CONFIG_FILE: that name says "a RunConfig lives here" to `lmtune eval`, `predict` and `serve`, and this
# folder is a model folder, not a run of a task.
CONFIG_FILES = {"model": "pretrain.yaml", "continue": "pretrain_continue.yaml"}


# ---- the output folder ------------------------------------------------------------------------------------------

def check_output(cfg, command: str) -> Path:
    """The output folder and whether it may be used, changing nothing (a bad corpus must never cost an old run);
    a resumed run must be the same run (`lmtune train`'s rule: only how-to-run settings may differ)."""
    out = Path(cfg.output.dir)
    resuming = rundir.check_reuse(out, cfg.output.overwrite, cfg.train.resume, "output.dir=<new folder>")
    saved_file = out / CONFIG_FILES[command]
    if resuming and saved_file.is_file():
        try:
            saved = type(cfg).model_validate(yaml.safe_load(saved_file.read_text(encoding="utf-8")))
        except ValidationError:
            raise LmtuneError(f"{saved_file} was written by an earlier lmtune and cannot be resumed; start over with "
                              "output.overwrite=true or output.dir=<new folder>") from None
        if differences := rundir.config_differences(cfg, saved, rundir.RESUME_FREE_KEYS):
            raise LmtuneError("train.resume=true continues the same run, but the config differs from the saved one:\n  "
                              + "\n  ".join(differences) + f"\nUse the saved config ({saved_file}) or start a new "
                              "run (output.dir=<new folder>).")
    return out


def claim_output(out: Path, cfg, command: str, provenance: dict[str, Any]) -> Path:
    """After the data and the model have loaded: replace an old output where output.overwrite says so, then mark
    the folder as lmtune's (provenance first, as `lmtune train` does) and record the resolved config."""
    rundir.claim(out, cfg.output.overwrite, cfg.train.resume)
    write_json(out / rundir.PROVENANCE_FILE, provenance)
    write_yaml(out / CONFIG_FILES[command], cfg.model_dump(mode="json"))
    return out


def finish(out: Path, metrics: dict[str, Any], keep_checkpoints: bool) -> None:
    write_json(out / rundir.METRICS_FILE, metrics)  # last: marks a finished run
    if not keep_checkpoints:
        shutil.rmtree(out / rundir.CHECKPOINTS, ignore_errors=True)


def configure_threads(count: int | None) -> None:
    torch.set_num_threads(count or os.cpu_count() or 1)


# ---- training ---------------------------------------------------------------------------------------------------

def build_optimizer(model, cfg: PretrainTrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum; biases and norm weights get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas)


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


def training_arguments(cfg: PretrainTrainConfig, out: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out / rundir.CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_steps=cfg.max_steps or -1,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.checkpoint_every,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="no",
        seed=cfg.seed,
        data_seed=cfg.seed,
        **trainer_precision(cfg.precision),
        report_to="none",
        disable_tqdm=not _show_progress(cfg),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
    )


def resume_checkpoint(out: Path, resume: bool) -> Path | None:
    """The newest complete checkpoint when resuming (train/checkpoints.py: ones a kill cut short are removed)."""
    if not resume:
        return None
    checkpoint = newest_complete(out / rundir.CHECKPOINTS)
    print(f"train.resume: continuing from {checkpoint}" if checkpoint else
          f"train.resume: no complete checkpoint in {out} yet; starting from the beginning")
    return checkpoint


def _show_progress(cfg: PretrainTrainConfig) -> bool:
    """Bars on a terminal, one line per epoch in a file (train.progress forces either), as `lmtune train` does."""
    return sys.stderr.isatty() if cfg.progress is None else cfg.progress


def run_loop(model, train_dataset, collator, cfg: PretrainTrainConfig, out: Path,
             measure: Callable[[], dict[str, Any]] | None, callbacks: list[TrainerCallback] | None = None,
             initial: dict[str, Any] | None = None, trainer_class: type[Trainer] = Trainer) -> dict[str, Any]:
    """Train `model` in place; return the loss log, the validation history and timings. `initial`: the step-0
    validation result when the caller measured it already (continued pre-training's "before")."""
    log_path = out / rundir.LOG_FILE
    ppl = PerplexityCallback(measure, cfg.eval_steps, log_path) if measure else None
    trainer = trainer_class(
        model=model, args=training_arguments(cfg, out), train_dataset=train_dataset, data_collator=collator,
        optimizers=(build_optimizer(model, cfg), None),
        callbacks=[JsonlLog(log_path), *([ppl] if ppl else []), *(callbacks or [])],
    )
    if not _show_progress(cfg):
        quiet_output(trainer)
    checkpoint = resume_checkpoint(out, cfg.resume)
    if ppl and checkpoint is None:
        if initial is None:
            ppl.record(0)
        else:
            ppl.history.append({"step": 0, **initial})
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    final = ppl.record(trainer.state.global_step) if ppl else None
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return {
        "global_step": trainer.state.global_step, "train_seconds": round(seconds, 2),
        "train_loss": round(result.training_loss, 5), "losses": losses,
        "validation": final, "validation_history": ppl.history if ppl else [],
        "resumed_from": checkpoint.name if checkpoint else None, "threads": torch.get_num_threads(),
        "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None,
    }
