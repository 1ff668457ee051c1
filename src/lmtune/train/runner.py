"""`lmtune train`: one run from a resolved config to a finished run directory."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments, set_seed

from lmtune.device import check_master_weights, place, trainer_precision
from lmtune.errors import LmtuneError
from lmtune.evaluate.evaluator import scalar_metrics
from lmtune.evaluate.predictions import take_predictions
from lmtune.io import dir_bytes, write_json, write_yaml
from lmtune.methods import STRATEGIES
from lmtune.models.loading import load_backbone
from lmtune.models.quantization import apply_strategy, prepare_for_training
from lmtune.results import TrainingMetrics, write_metrics
from lmtune.runconfig import RunConfig, resolve
from lmtune.tasks import TASKS
from lmtune.train import ranks, rundir, speed
from lmtune.train.checkpoints import newest_complete
from lmtune.train.fsdp import check_sharded, fsdp_arguments, gather_trainable
from lmtune.train.head_fit import fit_head, uses_head_fit
from lmtune.train.log import JsonlLog, quiet_libraries, quiet_output
from lmtune.train.memory import PeakMemory
from lmtune.train.trainer import LmtuneTrainer


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    config: RunConfig
    model: Any = None
    """The trained model, still in memory (tests and the Python API use it; the CLI does not)."""


def configure_threads(count: int | None) -> None:
    torch.set_num_threads(count or os.cpu_count() or 1)


def _init_source(cfg: RunConfig) -> Path | None:
    """Check `train.init_from` before any model loads: a finished run of the same strategy and options."""
    if not cfg.train.init_from:
        return None
    source = Path(cfg.train.init_from)
    saved = rundir.load_run_config(source)
    if not rundir.is_finished(source):
        raise LmtuneError(f"train.init_from={source} is not a finished run (no metrics.json); use train.resume for killed runs")
    method_diffs = [d for d in rundir.config_differences(cfg, saved) if d.startswith("method.")]
    if method_diffs:
        raise LmtuneError(
            f"train.init_from={source} was trained with a different method config:\n  " + "\n  ".join(method_diffs)
            + "\nSet method.* as in that run's config.yaml."
        )
    return source


def _build_model(task, strategy, backbone, init_source: Path | None):
    backbone.body = prepare_for_training(backbone.body)  # a quantised base: PEFT's k-bit preparation
    model = task.build_model(backbone)
    if init_source is None:
        return apply_strategy(strategy, model)
    rundir.check_same_base(init_source, json.loads((init_source / rundir.PROVENANCE_FILE).read_text()), backbone)
    strategy.load(model, init_source, trainable=True)
    task.load_head(model, init_source)
    return model


def _training_arguments(cfg: RunConfig, run_dir: Path, loss_only: bool, model) -> TrainingArguments:
    t = cfg.train
    evaluate = t.eval_every != "no"
    return TrainingArguments(
        output_dir=str(run_dir / rundir.CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=cfg.eval.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=t.lr_scheduler,
        seed=t.seed,
        eval_strategy=t.eval_every,
        save_strategy=t.eval_every if evaluate else "epoch",
        eval_steps=t.eval_steps,
        save_steps=t.eval_steps,
        logging_steps=t.logging_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=(t.keep_best or bool(t.early_stopping_patience)) and evaluate,
        metric_for_best_model=cfg.eval.metric,
        greater_is_better=cfg.eval.metric != "loss",
        **trainer_precision(t.precision, cfg.model.dtype),
        report_to="none",
        disable_tqdm=not t.show_progress(),
        dataloader_num_workers=0,
        label_names=["labels"],
        prediction_loss_only=loss_only,
        **ranks.trainer_settings(),
        **fsdp_arguments(t.fsdp, model),
        **speed.trainer_arguments(t),
    )


def train(cfg: RunConfig, callbacks: list[TrainerCallback] | None = None) -> RunResult:
    """One run. Under torchrun/accelerate launch every process calls this; only the main one checks, writes and
    deletes the run directory and computes the final metrics (`lmtune.train.ranks`); the others return an empty
    `metrics` once training is over."""
    cfg = resolve(cfg)  # every default filled once, before the resume check: it compares resolved configs
    task = TASKS.build(cfg.task.name, cfg)
    ranks.start(sharded=cfg.train.fsdp is not None)
    run_dir = ranks.on_main(lambda: rundir.check_run_dir(cfg), "checking the run directory")
    configure_threads(cfg.train.num_threads)
    trainer_precision(cfg.train.precision, cfg.model.dtype)  # refuses fp16 autocast on a CPU before the model loads
    if not cfg.train.show_progress():
        quiet_libraries()
    set_seed(cfg.train.seed)
    strategy = STRATEGIES.build(cfg.method.name, cfg.method)
    splits, backbone, model = ranks.main_first(lambda: _load(cfg, task, strategy), "loading the data and the model")
    ranks.on_main(lambda: _claim(cfg, run_dir, backbone), "writing the run directory")
    counts = model.parameter_counts()
    if ranks.is_main():
        print(yaml.safe_dump({"resolved config": cfg.model_dump(mode="json")}, sort_keys=False))
        print(f"{strategy.name}: {strategy.describe()}; trainable {counts['trainable_params']:,} of "
              f"{counts['total_params']:,} parameters")

    started = time.perf_counter()
    with PeakMemory() as peak:
        global_step, sharded = _fit(cfg, run_dir, task, model, splits, callbacks)
    train_seconds = time.perf_counter() - started
    if not ranks.is_main():  # DDP: every rank holds the same trained weights; the main one saves and evaluates
        return RunResult(run_dir, {}, cfg, model)
    if sharded is not None:
        model = _unsharded_copy(cfg, task, strategy, sharded)

    files = strategy.save(model, run_dir) + task.save_head(model, run_dir)
    metrics = write_metrics(run_dir, TrainingMetrics(  # written last: its presence marks a finished run
        **_final_metrics(cfg, model, task, splits, run_dir),
        **counts,
        trainable_percent=round(100 * counts["trainable_params"] / counts["total_params"], 4),
        artifact_bytes=dir_bytes(files),
        adapter_bytes=serving_bytes(strategy, task, model),
        train_seconds=round(train_seconds, 2),
        peak_rss_mb=peak.mb,
        global_step=global_step,
        method=strategy.name,
        serve_kind=strategy.serve_kind,
        **task.data_report(splits),
    ))
    if not cfg.train.keep_checkpoints:
        shutil.rmtree(run_dir / rundir.CHECKPOINTS, ignore_errors=True)
    return RunResult(run_dir, metrics, cfg, model)


def _load(cfg: RunConfig, task, strategy):
    splits = task.load_data()  # bad data fails here, before the model loads
    init_source = _init_source(cfg)
    backbone = load_backbone(cfg.model, task.backbone_class, cfg.train.seed)
    # On the device Trainer uses (a no-op on a CPU); a quantised body stays where bitsandbytes put it and the head
    # follows it, since Trainer moves the whole model unless the model itself says it is quantised.
    model = place(_build_model(task, strategy, backbone, init_source))
    check_master_weights(model, cfg.train.precision)
    return splits, backbone, model


def _unsharded_copy(cfg: RunConfig, task, strategy, trained: dict):
    """FSDP: the main process saves and evaluates a whole copy of the model (the base reloaded, the trained
    weights gathered from every shard), since a sharded model computes only with every rank taking part."""
    _, _, model = _load(cfg, task, strategy)
    unexpected = model.load_state_dict(trained, strict=False).unexpected_keys
    if unexpected:
        raise LmtuneError(f"train.fsdp: the gathered weights do not fit the model: {unexpected[:5]}")
    return model


def _claim(cfg: RunConfig, run_dir: Path, backbone) -> None:
    rundir.claim_run_dir(cfg, run_dir)  # only now may output.overwrite remove the old run
    # Provenance first: it is what marks the folder as lmtune's, so a kill before config.yaml lands still leaves a
    # folder that output.overwrite may replace.
    write_json(run_dir / rundir.PROVENANCE_FILE, rundir.provenance(cfg, backbone))
    write_yaml(run_dir / rundir.CONFIG_FILE, cfg.model_dump(mode="json"))


def _fit(cfg: RunConfig, run_dir: Path, task, model, splits, callbacks) -> tuple[int, dict | None]:
    """Train; returns the optimizer steps taken and, under FSDP, the trainable weights gathered from every shard.
    A head on a frozen body is fitted on cached features in one process (the body runs once per split,
    train/head_fit.py); everything else, and every run of several processes, trains through the Trainer."""
    if uses_head_fit(cfg, model) and not ranks.distributed():
        return fit_head(cfg, task, model, splits, run_dir).iterations, None
    trainer = _trainer(cfg, run_dir, task, model, splits, callbacks)
    check_sharded(cfg.train.fsdp, trainer)
    checkpoint = ranks.on_main(lambda: _resume_checkpoint(cfg, run_dir), "looking for a checkpoint to resume from")
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer.state.global_step, gather_trainable(trainer)  # FSDP: every rank takes part in the gather


def _trainer(cfg: RunConfig, run_dir: Path, task, model, splits, callbacks) -> LmtuneTrainer:
    tokenizer = model.tokenizer
    early_stopping = [EarlyStoppingCallback(cfg.train.early_stopping_patience)] if cfg.train.early_stopping_patience else []
    metric_fn = task.trainer_metrics()
    speed.prepare(cfg.train, model)
    trainer = LmtuneTrainer(
        model=model,
        args=_training_arguments(cfg, run_dir, loss_only=metric_fn is None, model=model),
        train_dataset=task.encode(splits.train, tokenizer),
        eval_dataset=task.encode(splits.validation, tokenizer),
        data_collator=speed.train_collator(cfg.train, task, model),
        compute_metrics=(lambda p: scalar_metrics(metric_fn(p.predictions, p.label_ids))) if metric_fn else None,
        callbacks=[JsonlLog(run_dir / rundir.LOG_FILE), *early_stopping, *(callbacks or [])],
        head_learning_rate=cfg.train.head_learning_rate,
        length_pool=cfg.train.length_pool,
    )
    if not cfg.train.show_progress():
        quiet_output(trainer)
    return trainer


def _resume_checkpoint(cfg: RunConfig, run_dir: Path) -> str | None:
    if not cfg.train.resume:
        return None
    checkpoint = newest_complete(run_dir / rundir.CHECKPOINTS)
    if checkpoint is None:
        print(f"train.resume: no complete checkpoint in {run_dir} yet; starting from the beginning")
    else:
        print(f"train.resume: continuing from {checkpoint}")
    return str(checkpoint) if checkpoint else None


def serving_bytes(strategy, task, model) -> int:
    """Bytes a server holds for this run: the strategy's serving form plus the task head. Smaller than the
    artifact where training needs more (p-tuning keeps its prompt encoder to train further; serving needs its output)."""
    tensors = list(strategy.export(model).values()) + list(model.head.state_dict().values())
    return sum(t.numel() * t.element_size() for t in tensors)


def _final_metrics(cfg: RunConfig, model, task, splits, run_dir: Path) -> dict[str, Any]:
    has_test = splits.test is not None
    by_split = {"validation": task.evaluate(model, splits.validation, cfg.eval.batch_size, quick=has_test)}
    if has_test:
        by_split["test"] = task.evaluate(model, splits.test, cfg.eval.batch_size)
    for split, metrics in by_split.items():
        take_predictions(metrics, run_dir, split)
    return {"eval_split": "test" if has_test else "validation", "splits": by_split}
