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
from lmtune.config.schema import RunConfig
from lmtune.io import write_json


class ScratchConfig(BaselineConfig):
    name: Literal["scratch"] = "scratch"
    """The backbone's architecture from random weights, trained with the comparison's training settings."""
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "full"})
    """The strategy that trains the random weights; `full` by default: every weight trains, as pre-training
    would have (an adapter on random weights measures little)."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: dict[str, Any]) -> dict[str, Any]:
        from lmtune.methods import method_config_class

        return method_config_class(value.get("name", "full")).model_validate(value).model_dump(mode="json")


@register_baseline
class Scratch(Baseline):
    name = "scratch"
    config_cls = ScratchConfig
    summary = "the same architecture from random weights, trained with the same budget (every task)"

    def run_config(self, run_cfg: RunConfig, out_dir: Path) -> RunConfig:
        """The comparison's run config with random weights and this baseline's strategy, run in `out_dir`."""
        cfg = run_cfg.model_copy(deep=True)
        cfg.model.init = "random"
        cfg.method = dict(self.cfg.method)  # validated by the strategy registry on assignment
        cfg.output.dir, cfg.output.name = str(out_dir.parent), out_dir.name
        killed = out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / METRICS_FILE).is_file()
        if killed and not cfg.output.overwrite:
            cfg.train.resume = True  # a killed scratch run continues from its last checkpoint, as strategies do
        return cfg

    def run(self, run_cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
        from lmtune.train import train

        result = train(self.run_config(run_cfg, Path(out_dir)))
        metrics = {**result.metrics, "method": self.name, "trained_with": result.config.method.name,
                   "baseline": self.cfg.model_dump(mode="json")}
        write_json(result.run_dir / METRICS_FILE, metrics)  # the trainer's metrics.json, relabelled (atomic)
        return metrics
