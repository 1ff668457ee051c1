"""Load a finished run directory back into a model: for `lmtune eval`, `lmtune predict` and, later, the server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmtune.config.loading import apply_overrides
from lmtune.device import place
from lmtune.errors import LmtuneError
from lmtune.methods import STRATEGIES, Strategy
from lmtune.models.loading import load_backbone
from lmtune.runconfig import RunConfig, resolve, resolve_config
from lmtune.tasks import TASKS, Task, TaskModel
from lmtune.train import rundir


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    task: Task
    strategy: Strategy
    model: TaskModel


def load_run(run_dir: str | Path, overrides: list[str] | None = None) -> LoadedRun:
    """Rebuild the trained model of `run_dir`. Overrides may point at other data or another copy of the base
    model; a base model with different weights is refused."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmtuneError(f"run directory {run_dir} does not exist")
    saved = rundir.load_run_config(run_dir)
    if not rundir.is_finished(run_dir):
        raise LmtuneError(f"{run_dir} is not a finished run (no metrics.json); finish it with train.resume=true")
    cfg = resolve_config(apply_overrides(saved.model_dump(mode="json"), overrides or []))
    if cfg.method.name != saved.method.name:
        raise LmtuneError(f"{run_dir} holds a {saved.method.name} run; method.name cannot be overridden")
    provenance = json.loads((run_dir / rundir.PROVENANCE_FILE).read_text())
    cfg = resolve(cfg)  # configs saved before a default existed still load
    task = TASKS.build(cfg.task.name, cfg)
    backbone = load_backbone(cfg.model, task.backbone_class, cfg.train.seed)
    rundir.check_same_base(run_dir, provenance, backbone)
    strategy = STRATEGIES.build(cfg.method.name, cfg.method)
    model = task.build_model(backbone)
    strategy.load(model, run_dir)
    task.load_head(model, run_dir)
    place(model.eval())  # on this machine's GPU where it has one (the batches follow: lmtune.device)
    return LoadedRun(run_dir, cfg, task, strategy, model)
