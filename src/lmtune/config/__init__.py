"""Run configuration: typed pydantic models, YAML files and `a.b=c` overrides."""

from lmtune.config.loading import load_config, parse_overrides, resolve_config
from lmtune.config.schema import (
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    StrictModel,
    TaskConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "StrictModel",
    "TaskConfig",
    "TrainConfig",
    "load_config",
    "parse_overrides",
    "resolve_config",
]
