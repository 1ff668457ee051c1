"""The strategy interface and its registry.

A strategy turns a task model (a pretrained body plus a new task head) into a trainable one and knows how to
save, load and export what it trained. Shared code (trainer, evaluator, server) only talks to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from lmtune.config.schema import MethodConfig
from lmtune.forms import Form
from lmtune.registry import Registry

if TYPE_CHECKING:
    from lmtune.tasks.base import TaskModel

# The names of `lmtune.forms`' forms, as metrics.json records them (`serve_kind`).
ServeKind = Literal["weight_delta", "virtual_tokens", "kv_prefix", "head", "full_model", "not servable"]


class Strategy(ABC):
    """One fine-tuning strategy. Subclasses live one per file and register with `@register_strategy`."""

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]]
    form: ClassVar[Form]
    """What the trained adapter is (`lmtune.forms`): how evaluation decodes with it and how it is served."""
    default_learning_rate: ClassVar[float]
    default_pooling_layers: ClassVar[int] = 1
    """How many last hidden layers a classification head reads when model.pooling_layers is not set."""
    summary: ClassVar[str] = ""

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    @abstractmethod
    def apply(self, model: TaskModel) -> TaskModel:
        """Freeze what must stay frozen and add the trainable parameters. The task head always trains."""

    @abstractmethod
    def save(self, model: TaskModel, directory: Path) -> list[Path]:
        """Write what this strategy trained (not the head) into `directory`; return the files written."""

    @abstractmethod
    def load(self, model: TaskModel, directory: Path, trainable: bool = False) -> TaskModel:
        """Rebuild the trained model from a fresh (un-applied) task model and the files `save` wrote.
        `trainable=True` makes it ready to train further (`train.init_from`)."""

    @abstractmethod
    def export(self, model: TaskModel) -> dict[str, torch.Tensor]:
        """The serving form of what was trained (the body's part; the head is exported by the task)."""

    @property
    def serve_kind(self) -> ServeKind:
        """The form's name, as metrics.json and `lmtune methods` show it."""
        return self.form.name  # type: ignore[return-value]

    saved_before: ClassVar[dict[str, Any]] = {}
    """Option values a run saved before the option existed had (`rundir._migrated` fills a saved config with them)."""

    def defaults(self, labels: list[str] | None) -> dict[str, Any]:
        """Defaults of this strategy's options that depend on the task, as dotted keys (`lmtune.runconfig.resolve`
        fills them once): `labels` is the task's label set, None for tasks without one."""
        return {}

    def describe(self) -> str:
        """One line on what gets trained, for logs and `lmtune methods`."""
        return self.summary

    def parameter_formula(self) -> str | None:
        """How many parameters train, as a formula in words, where the strategy can state one."""
        return None


STRATEGIES: Registry[Strategy] = Registry("method", "methods", default="lora")
register_strategy = STRATEGIES.register
