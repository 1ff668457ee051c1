"""Full fine-tuning: every weight of the backbone trains."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from lmtune.config.schema import MethodConfig
from lmtune.forms import FULL_MODEL
from lmtune.io import save_pretrained_atomically
from lmtune.methods.base import Strategy, register_strategy


class FullConfig(MethodConfig):
    name: Literal["full"] = "full"
    """Full fine-tuning: every weight trains; the artifact is a whole model folder."""


@register_strategy
class Full(Strategy):
    name = "full"
    config_cls = FullConfig
    form = FULL_MODEL
    default_learning_rate = 5e-5
    summary = "every backbone weight trains; saved as a complete model folder"

    def apply(self, model):
        for parameter in model.body.parameters():
            parameter.requires_grad_(True)
        return model

    def save(self, model, directory: Path) -> list[Path]:
        return save_pretrained_atomically(directory / "model", model.body, model.tokenizer)

    def load(self, model, directory: Path, trainable: bool = False):
        # In the dtype the base was loaded in (model.dtype), whatever the saved run trained in.
        model.body = type(model.body).from_pretrained(directory / "model", dtype=model.body.dtype)
        return self.apply(model) if trainable else model

    def export(self, model) -> dict[str, torch.Tensor]:
        return dict(model.body.state_dict())
