"""The baseline interface and its registry.

A baseline is what a fine-tuned model is held against in `lmtune compare`: a classical model (TF-IDF), the
untuned model prompted (zero- or few-shot), the same architecture trained from random weights. Each one trains
and evaluates on the data of a run config and leaves a run directory whose `metrics.json` has the shape a
training run's has, so the leaderboard reads both alike.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lmtune.config.schema import StrictModel
from lmtune.errors import LmtuneError
from lmtune.io import write_yaml
from lmtune.registry import Registry
from lmtune.results import BaselineMetrics, write_metrics
from lmtune.runconfig import RunConfig

if TYPE_CHECKING:
    from lmtune.data.splits import Splits
    from lmtune.tasks.base import Task

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"  # written last: its presence marks a finished baseline, as for a training run


class BaselineConfig(StrictModel):
    """Base of every baseline's config; each baseline file defines its own subclass with a `name` literal."""

    name: str
    """The baseline: `tfidf` (TF-IDF + logistic regression), `prompting` (the untuned model, zero- or few-shot),
    `scratch` (the same architecture from random weights, trained like the strategies)."""


class Baseline(ABC):
    """One baseline. Subclasses live one per file and register with `@register_baseline`."""

    name: ClassVar[str]
    config_cls: ClassVar[type[BaselineConfig]]
    summary: ClassVar[str] = ""

    def __init__(self, cfg: BaselineConfig):
        self.cfg = cfg

    @abstractmethod
    def run(self, run_cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
        """Train (if anything trains) and evaluate on `run_cfg`'s data; write `out_dir/config.yaml` and, last,
        `out_dir/metrics.json`; return the metrics (the shape of a training run's metrics.json)."""

    # ---- shared steps for baselines that do not train through the Trainer --------------------------------------

    def check_task(self, task: type[Task]) -> None:
        """Refuse a task (its class) this baseline cannot run, before any data or model is read."""

    def prepare(self, run_cfg: RunConfig, out_dir: Path) -> tuple[RunConfig, Task, Splits]:
        """The resolved config (every default filled), the task, and its checked data."""
        from lmtune.runconfig import resolve
        from lmtune.tasks import TASKS
        from lmtune.train.runner import configure_threads

        self.check_task(TASKS.get(run_cfg.task.name))
        cfg = resolve(run_cfg)
        _prepare_out_dir(Path(out_dir), cfg.output.overwrite)
        configure_threads(cfg.train.num_threads)
        task = TASKS.build(cfg.task.name, cfg)
        return cfg, task, task.load_data()

    def write_config(self, cfg: RunConfig, out_dir: Path) -> Path:
        """The resolved run config plus a `baseline:` section: what was run, reproducibly."""
        return write_yaml(Path(out_dir) / CONFIG_FILE, {**cfg.model_dump(mode="json"), "baseline": self.cfg.model_dump(mode="json")})

    def finish(self, out_dir: Path, by_split: dict[str, dict[str, Any]], *, trainable_params: int, total_params: int,
               artifact_bytes: int, train_seconds: float, peak_rss_mb: float, **details: Any) -> dict[str, Any]:
        """Assemble metrics.json (the headline split's metrics at top level, as a training run has them) and
        write it last."""
        metrics = BaselineMetrics(
            eval_split="test" if "test" in by_split else "validation",
            splits=by_split,
            trainable_params=trainable_params,
            total_params=total_params,
            trainable_percent=round(100 * trainable_params / total_params, 4) if total_params else 0.0,
            artifact_bytes=artifact_bytes,
            train_seconds=round(train_seconds, 2),
            peak_rss_mb=peak_rss_mb,
            method=self.name,
            baseline=self.cfg.model_dump(mode="json"),
            # Facts that are not metrics sit one level down, so the leaderboard does not take them for metric columns.
            details=details,
        )
        return write_metrics(out_dir, metrics)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """A finished baseline is kept unless `output.overwrite`; leftovers of a killed one are simply overwritten
    (these baselines have no checkpoints to resume from)."""
    if (out_dir / METRICS_FILE).is_file():
        if not overwrite:
            raise LmtuneError(f"{out_dir} holds a finished baseline; set output.overwrite=true to replace it or output.name=<new name>")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def evaluation_splits(splits: Splits) -> dict[str, Any]:
    """The splits a run reports: validation, and test where there is one."""
    return {"validation": splits.validation, **({"test": splits.test} if splits.test is not None else {})}


BASELINES: Registry[Baseline] = Registry("baseline")
register_baseline = BASELINES.register
