"""What the server holds per adapter: its serving form, read once from disk and applied per row.

An adapter has at most one body part (a weight delta on some modules, a soft prompt, or a key/value prefix) and,
for classification runs, a task head. A row of a batch carries one adapter or none (the base model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmtune.forms import Form


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class BodyPart(ABC):
    """The part of an adapter that changes the body's computation. Subclasses live in `serve/kinds/`."""

    @abstractmethod
    def tensors(self) -> list[torch.Tensor]:
        """Every tensor held, for the memory budget."""

    def nbytes(self) -> int:
        return tensor_bytes(self.tensors())

    def soft_prompt(self) -> torch.Tensor | None:
        """[virtual, hidden] embeddings to place before the row's text, or None."""
        return None

    def kv_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per layer (keys, values), each [kv_heads, virtual, head_dim], to place before the row's text, or None."""
        return None

    def virtual_tokens(self) -> int:
        """Positions the part takes before the row's text (soft prompt or prefix length)."""
        soft, prefix = self.soft_prompt(), self.kv_prefix()
        return soft.size(0) if soft is not None else (prefix[0][0].size(1) if prefix else 0)

    def module_names(self) -> list[str]:
        """Names (in the served model) of the modules whose outputs this part changes."""
        return []


@dataclass
class Head:
    """A classification head on the pooled body, as `tasks/classification.py` trained it."""

    weight: torch.Tensor  # [labels, hidden]
    bias: torch.Tensor  # [labels]
    labels: list[str]
    pooling: str
    layers: int = 1
    """How many of the body's last hidden layers it reads, concatenated (model.pooling_layers, resolved)."""

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight, self.bias]


@dataclass
class ServedAdapter:
    name: str
    source: Path
    body: BodyPart | None
    head: Head | None
    base: str
    """The base model the adapter says it was trained on (id or path), for listings."""
    method: str
    """The lmtune strategy or the PEFT type it came from."""
    form: Form
    """What it is (`lmtune.forms`), as the strategy that trained its PEFT type declares it."""
    notes: list[str] = field(default_factory=list)
    max_length: int | None = None
    """The run's model.max_length: classification truncates to it, as evaluation did."""
    template: str | None = None
    """The prompt template a generative run trained with (alpaca, chat, auto): chat requests are rendered with it."""

    @property
    def kind(self) -> str:
        return self.form.name

    def nbytes(self) -> int:
        return (self.body.nbytes() if self.body else 0) + (tensor_bytes(self.head.tensors()) if self.head else 0)
