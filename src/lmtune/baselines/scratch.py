"""The no-transfer control: the same architecture and tokenizer with random weights, trained exactly like the
strategies (same data, same training settings). The gap to a fine-tuned run is what pre-training is worth.

It is an ordinary training run (`model.init=random`), so its run directory is a real one: the trainer writes
config.yaml and metrics.json, and `lmtune eval` / `predict` work on it. That is also why config.yaml gets no
`baseline:` section here (a run config refuses unknown keys); metrics.json records the baseline instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from lmtune.baselines.base import (
    METRICS_FILE,
    Baseline,
    BaselineConfig,
    register_baseline,
)
from lmtune.methods.full import Full
from lmtune.results import TrainingMetrics, write_metrics
from lmtune.runconfig import RunConfig


class ScratchConfig(BaselineConfig):
    name: Literal["scratch"] = "scratch"
    """The backbone's architecture from random weights, trained with the comparison's training settings."""
    method: dict[str, Any] = Field(default_factory=lambda: {"name": Full.name})
    """The strategy that trains the random weights; `full` by default: every weight trains, as pre-training
    would have (an adapter on random weights measures little)."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: dict[str, Any]) -> dict[str, Any]:
        from lmtune.methods import STRATEGIES

        return STRATEGIES.config_class(value.get("name", Full.name)).model_validate(value).model_dump(mode="json")


@register_baseline
class Scratch(Baseline):
    name = "scratch"
    config_cls = ScratchConfig
    summary = "the same architecture from random weights, trained with the same budget (every task)"

    def run_config(self, run_cfg: RunConfig, out_dir: Path) -> RunConfig:
        """The comparison's run config with random weights and this baseline's strategy, run in `out_dir`."""
        killed = out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / METRICS_FILE).is_file()
        return run_cfg.updated({
            "model.init": "random",
            "method": dict(self.cfg.method),
            "output.dir": str(out_dir.parent),
            "output.name": out_dir.name,
            # A killed scratch run continues from its last checkpoint, as strategies do.
            "train.resume": run_cfg.train.resume or (killed and not run_cfg.output.overwrite),
        })

    def run(self, run_cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
        from lmtune.train import train

        result = train(self.run_config(run_cfg, Path(out_dir)))
        metrics = TrainingMetrics.model_validate({**result.metrics, "method": self.name,
                                                  "trained_with": result.config.method.name,
                                                  "baseline": self.cfg.model_dump(mode="json")})
        return write_metrics(result.run_dir, metrics)  # the trainer's metrics.json, relabelled (atomic)
