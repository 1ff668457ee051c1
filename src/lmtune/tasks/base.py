"""The task interface and registry, and the model every task trains: a pretrained body plus a task head."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lmtune.config.schema import RunConfig
from lmtune.data.splits import Splits

if TYPE_CHECKING:
    from lmtune.models.loading import Backbone


class TaskModel(nn.Module):
    """A body (the backbone, possibly wrapped by a strategy) and a new task head that always trains.

    Strategies replace or wrap `body`; the head, the pooling and the loss belong to the task.
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.body = backbone.body
        self.head = head
        self.backbone = backbone  # not a Module: tokenizer, path, kind, pooling, weights hash

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def parameter_counts(self) -> dict[str, int]:
        params = {id(p): p for p in self.parameters()}.values()
        return {
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params),
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k in trainable}


class Task(ABC):
    name: ClassVar[str]

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @abstractmethod
    def load_data(self) -> Splits:
        """Read and check every split before any model is loaded, so bad data fails in seconds."""

    @abstractmethod
    def build_model(self, backbone: Backbone) -> TaskModel:
        """The backbone plus a new task head."""

    @abstractmethod
    def encode(self, table, tokenizer):
        """Tokenised features the model's forward takes."""

    @abstractmethod
    def collator(self, tokenizer):
        """Batches encoded rows."""

    @abstractmethod
    def compute_metrics(self, logits: Any, label_ids: Any) -> dict[str, Any]:
        """Task metrics from predictions on a split."""

    @abstractmethod
    def predict(self, model: TaskModel, rows: list[dict]) -> list[dict]:
        """Human-readable predictions for raw rows."""

    def save_head(self, model: TaskModel, directory: Path) -> list[Path]:
        from safetensors.torch import save_file

        from lmtune.io import atomic_write

        state = {k: v.contiguous() for k, v in model.head.state_dict().items()}
        return [atomic_write(directory / "head.safetensors", lambda tmp: save_file(state, str(tmp)))]

    def load_head(self, model: TaskModel, directory: Path) -> None:
        from safetensors.torch import load_file

        model.head.load_state_dict(load_file(str(directory / "head.safetensors")))


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    _TASKS[cls.name] = cls
    return cls


def registered_tasks() -> dict[str, type[Task]]:
    return dict(_TASKS)


def build_task(cfg: RunConfig) -> Task:
    return _TASKS[cfg.task.name](cfg)
