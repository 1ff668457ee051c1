"""Config sections (typed pydantic models), YAML files and `a.b=c` overrides. The bottom layer: it imports nothing
from lmtune but `lmtune.errors`; the assembled RunConfig is `lmtune.runconfig`."""

from lmtune.config.loading import parse_overrides
from lmtune.config.schema import (
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OutputConfig,
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
    "StrictModel",
    "TaskConfig",
    "TrainConfig",
    "parse_overrides",
]
