"""The compare config: one base run config, the strategies to try (each a list of overrides, optionally swept over
values) and the baselines to hold them against.

```yaml
base:                      # any `lmtune train` config
  model: {name: minilm}
  data: {train: ..., validation: ...}
strategies:
  - name: lora
    overrides: [method.name=lora]
  - name: lora
    overrides: [method.name=lora]
    sweep: {method.rank: [4, 8, 16, 32]}     # four entries: "lora rank=4", ...
baselines:
  - {name: tfidf}
  - {name: prompting, shots: 4}
  - {name: scratch}
output: {dir: runs/compare}
launch: {processes: 4}     # optional: each strategy entry as `torchrun --nproc_per_node 4 -m lmtune train ...`
```
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, field_validator

from lmtune.config.paths import LocalPath
from lmtune.config.schema import LaunchConfig, StrictModel


class StrategyEntry(StrictModel):
    name: str
    """The entry's name in the leaderboard (sweeps append `key=value`)."""
    overrides: list[str] = []
    """`a.b=c` overrides applied to the base config, e.g. [method.name=lora, method.rank=16]."""
    sweep: dict[str, list[Any]] | None = None
    """Dotted key → values: one entry per combination (a placement or size study: LoRA rank, bottleneck size,
    virtual tokens)."""


class CompareOutput(StrictModel):
    dir: Annotated[str, LocalPath()] = "runs/compare"
    """Folder for every entry's run directory, the leaderboard and report.html."""
    title: str | None = None
    """Report title; defaults to the task, model and data."""


class CompareConfig(StrictModel):
    """A side-by-side comparison of strategies and baselines on one task and one data set."""

    base: dict[str, Any] = {}
    """The run config every entry starts from (the keys of `lmtune train` configs)."""
    strategies: list[StrategyEntry] = Field(default_factory=list)
    """Fine-tuning entries, each a set of overrides of `base`."""
    baselines: list[dict[str, Any]] = Field(default_factory=list)
    """Baseline entries: {name: tfidf | prompting | scratch, ...its options}; `label` names the entry when one
    baseline appears twice (e.g. prompting with 0 and 4 shots)."""
    output: CompareOutput = Field(default_factory=CompareOutput)
    """Where results go."""
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    """How each strategy entry trains: in this process (the default) or as several processes through torchrun
    or accelerate launch (baselines always run here)."""

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from lmtune.baselines import BASELINES

        for raw in value:
            options = {k: v for k, v in raw.items() if k != "label"}
            BASELINES.config_class(raw.get("name", "")).model_validate(options)  # fail now, not after an hour of training
        return value


@dataclass
class Entry:
    name: str
    kind: str  # "strategy" | "baseline"
    overrides: list[str] = field(default_factory=list)
    baseline: dict[str, Any] | None = None

    @property
    def slug(self) -> str:
        """A folder name for the entry."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "-", self.name).strip("-")


def expand(cfg: CompareConfig) -> list[Entry]:
    entries: list[Entry] = []
    for strategy in cfg.strategies:
        if not strategy.sweep:
            entries.append(Entry(strategy.name, "strategy", list(strategy.overrides)))
            continue
        keys = list(strategy.sweep)
        for values in itertools.product(*(strategy.sweep[k] for k in keys)):
            label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
            extra = [f"{k}={v}" for k, v in zip(keys, values)]
            entries.append(Entry(f"{strategy.name} {label}", "strategy", [*strategy.overrides, *extra]))
    for raw in cfg.baselines:
        options = {k: v for k, v in raw.items() if k != "label"}
        entries.append(Entry(str(raw.get("label") or raw["name"]), "baseline", baseline=options))
    names = [e.slug for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"entry names must differ; repeated: {', '.join(duplicates)} (give each strategy its own name)")
    return entries
