"""The assembled run config, and the one place its defaults are filled.

`RunConfig` is the sections of `lmtune.config` plus a `method` and a `task` that are real discriminated unions
over the registered strategies' and tasks' config classes (`method.name` / `task.name` picks the member). It lives
here, one layer above `methods/` and `tasks/`, so that `config/` stays the leaf every layer imports.

`resolve(cfg)` fills every default that depends on the strategy, the task or the data (learning rates, the label
set, max length, the checkpoint metric) once, and returns a frozen config: what the run directory records and what
resume compares (so resume needs no list of keys to ignore).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, ValidationError, field_validator

from lmtune.config.loading import apply_overrides, explain, read_yaml
from lmtune.config.paths import path_updates, resolve_paths
from lmtune.config.schema import DataConfig, EvalConfig, ModelConfig, OutputConfig, StrictModel, TrainConfig, set_dotted
from lmtune.device import check_quantization, resolve_dtype, resolve_precision
from lmtune.errors import LmtuneError
from lmtune.methods import STRATEGIES
from lmtune.registry import Registry
from lmtune.tasks import TASKS, Task

DEFAULT_HEAD_LEARNING_RATE = 5e-3
"""A head trained from scratch needs bigger steps than a pretrained body: its learning rate is at least this."""


def _union_of(registry: Registry) -> Any:
    """The registered config classes as one union, told apart by their `name` literal. Built when this module is
    imported, after every built-in strategy and task has registered."""
    members = tuple(registry.config_class(name) for name in registry.names())
    return Annotated[Union[members], Field(discriminator="name")]  # noqa: UP007 - a runtime tuple of classes


MethodSection = _union_of(STRATEGIES)
TaskSection = _union_of(TASKS)


class RunConfig(StrictModel):
    """One fine-tuning run: which backbone, which data, which task, which strategy, how to train."""

    model: ModelConfig = ModelConfig()
    """The pretrained backbone."""
    data: DataConfig = DataConfig()
    """Where the data is and which columns hold what."""
    task: TaskSection = Field(default_factory=lambda: TASKS.config_class(TASKS.default)())
    """What the model learns to do (`task.name` picks it; classification when not given)."""
    method: MethodSection = Field(default_factory=lambda: STRATEGIES.config_class(STRATEGIES.default)())
    """The fine-tuning strategy and its options (`method.name` picks it; LoRA when not given)."""
    train: TrainConfig = TrainConfig()
    """Optimisation and checkpointing."""
    eval: EvalConfig = EvalConfig()
    """Evaluation settings."""
    output: OutputConfig = OutputConfig()
    """Where the run directory goes."""

    @field_validator("method", mode="before")
    @classmethod
    def _strategy_named(cls, value: Any) -> Any:
        return named_section(value, STRATEGIES, "method", "{name: lora, rank: 8}")

    @field_validator("task", mode="before")
    @classmethod
    def _task_named(cls, value: Any) -> Any:
        return named_section(value, TASKS, "task", "{name: instruction}")

    def run_dir_name(self) -> str:
        return self.output.name or self.method.name


def named_section(value: Any, registry: Registry, section: str, example: str) -> Any:
    """A `method`/`task` value with its `name` filled in and known, so the union picks its member and an unknown
    name is refused with "did you mean" (pydantic's own error would only list the tags)."""
    if isinstance(value, BaseModel):
        if type(value) in [registry.config_class(n) for n in registry.names()]:
            return value
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(f"{section} must be a mapping such as {example}")
    name = value.get("name", registry.default)
    registry.get(name)  # raises ValueError: unknown ...; did you mean ...
    return {**value, "name": name}


def resolve(cfg: RunConfig) -> RunConfig:
    """`cfg` with every default filled: the task's (max length, checkpoint metric, and the label set read from the
    training data where none is given), the learning rates (the strategy's default; the head's at least
    DEFAULT_HEAD_LEARNING_RATE), and the base's dtype and mixed precision `auto` means on this machine. Filling only what is unset makes it idempotent: resolving a resolved config
    (a saved config.yaml) changes nothing."""
    check_quantization(cfg.model.quantization)  # before any model loads: the fix names CUDA and bitsandbytes
    changes = dict(TASKS.build(cfg.task.name, cfg).defaults())
    dtype = resolve_dtype(cfg.model.dtype)
    changes["model.dtype"] = dtype
    changes["train.precision"] = resolve_precision(cfg.train.precision, dtype)
    strategy = STRATEGIES.build(cfg.method.name, cfg.method)
    changes.update(strategy.defaults(changes.get("data.labels", cfg.data.labels)))
    learning_rate = cfg.train.learning_rate or strategy.default_learning_rate
    changes["train.learning_rate"] = learning_rate
    changes["model.pooling_layers"] = cfg.model.pooling_layers or strategy.default_pooling_layers
    changes["train.head_learning_rate"] = cfg.train.head_learning_rate or max(learning_rate, DEFAULT_HEAD_LEARNING_RATE)
    return cfg.updated(changes)


def validate_run(raw: dict) -> RunConfig:
    """RunConfig from a raw dict, or an LmtuneError that says what to type instead."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise LmtuneError(explain(err, raw, RunConfig)) from None


def resolve_config(raw: dict, overrides: list[str] | None = None, base_dir: str | Path | None = None) -> RunConfig:
    """Validate `raw` plus overrides; relative paths become absolute against `base_dir` (default: the working
    directory, where the user ran lmtune; see config/paths.py). Task and strategy defaults are left to `resolve`,
    which `train` calls (the label set needs the data)."""
    return resolve_paths(validate_run(apply_overrides(dict(raw), overrides or [])), base_dir)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    return resolve_config(read_yaml(path) if path else {}, overrides)


def with_absolute_paths(raw: dict, base_dir: str | Path) -> dict:
    """A copy of the raw run config `raw` whose relative paths are absolute against `base_dir`: what a study or a
    comparison hands to trials that may run in another working directory."""
    updates = path_updates(validate_run(raw), base_dir)
    raw = copy.deepcopy(raw)
    for key, value in updates.items():
        set_dotted(raw, key.split("."), value)
    return raw


def build_task(cfg: RunConfig) -> Task:
    """The task of `cfg`, built on the resolved config (a task reads its resolved label set and max length)."""
    resolved = resolve(cfg)
    return TASKS.build(resolved.task.name, resolved)
