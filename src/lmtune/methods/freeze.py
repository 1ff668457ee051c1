"""A new head on a frozen body, or the last N transformer blocks plus the head."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from lmtune.config.schema import MethodConfig
from lmtune.errors import LmtuneError
from lmtune.forms import FULL_MODEL, HEAD
from lmtune.methods._weights import freeze, load_into, save_tensors
from lmtune.methods.base import Strategy, register_strategy
from lmtune.models.targets import transformer_blocks

LAYERS_FILE = "body_layers.safetensors"


class FreezeConfig(MethodConfig):
    name: Literal["freeze"] = "freeze"
    """Frozen body: only the new head trains, or the head plus the last N transformer blocks."""
    train_last_layers: int = Field(0, ge=0)
    """How many of the last transformer blocks train with the head (0: the head alone)."""


@register_strategy
class Freeze(Strategy):
    name = "freeze"
    config_cls = FreezeConfig
    summary = "the body is frozen; the head (and optionally the last N blocks) trains"

    @property
    def form(self):  # type: ignore[override]
        return HEAD if self.cfg.train_last_layers == 0 else FULL_MODEL

    @property
    def default_learning_rate(self) -> float:  # type: ignore[override]
        # A lone linear head on frozen features wants a far larger step than transformer blocks do.
        return 5e-3 if self.cfg.train_last_layers == 0 else 2e-4

    @property
    def default_pooling_layers(self) -> int:  # type: ignore[override]
        # A frozen top layer is shaped by the pre-training objective; the head does better reading the last four
        # layers together (BERT's feature-based recipe; benchmarks/RESULTS.md, issue 18). A trained block adapts.
        return 4 if self.cfg.train_last_layers == 0 else 1

    def _trained_blocks(self, body) -> list[torch.nn.Module]:
        blocks = transformer_blocks(body)
        if self.cfg.train_last_layers > len(blocks):
            raise ValueError(f"method.train_last_layers={self.cfg.train_last_layers} but the model has {len(blocks)} blocks")
        return list(blocks)[len(blocks) - self.cfg.train_last_layers :]

    def apply(self, model):
        if self.cfg.train_last_layers == 0 and not model.has_head():
            raise LmtuneError(
                "method freeze with train_last_layers=0 trains only a new task head, and this task has none (it "
                "generates with the pretrained LM head); set method.train_last_layers to 1 or more"
            )
        freeze(model.body)
        for block in self._trained_blocks(model.body):
            for parameter in block.parameters():
                parameter.requires_grad_(True)
        return model

    def _trained_body(self, model) -> dict[str, torch.Tensor]:
        trained = {id(p) for block in self._trained_blocks(model.body) for p in block.parameters()}
        return {n: p.detach() for n, p in model.body.named_parameters() if id(p) in trained}

    def save(self, model, directory: Path) -> list[Path]:
        if self.cfg.train_last_layers == 0:
            return []
        return [save_tensors(self._trained_body(model), directory / LAYERS_FILE)]

    def load(self, model, directory: Path, trainable: bool = False):
        self.apply(model)
        if self.cfg.train_last_layers:
            load_into(model.body, directory / LAYERS_FILE)
        if not trainable:
            freeze(model.body)
        return model

    def export(self, model) -> dict[str, torch.Tensor]:
        return self._trained_body(model)
