"""Prefix tuning through PEFT: trainable key/value prefixes in every attention layer."""

from __future__ import annotations

from typing import Literal

from peft import PrefixTuningConfig
from pydantic import Field

from lmtune.config.schema import MethodConfig
from lmtune.forms import KV_PREFIX
from lmtune.methods._peft import PeftStrategy
from lmtune.methods.base import register_strategy


class PrefixTuningMethodConfig(MethodConfig):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    """Prefix tuning: trainable key/value vectors prepended in every attention layer (PEFT)."""
    num_virtual_tokens: int = Field(20, gt=0)
    """Prefix length per layer."""
    prefix_projection: bool = False
    """Produce the prefixes through a two-layer MLP (more stable, more parameters while training)."""
    encoder_hidden_size: int = Field(512, gt=0)
    """Hidden size of that MLP."""


@register_strategy
class PrefixTuning(PeftStrategy):
    name = "prefix_tuning"
    config_cls = PrefixTuningMethodConfig
    peft_type = "PREFIX_TUNING"
    form = KV_PREFIX
    default_learning_rate = 1e-2
    summary = "trainable key/value prefixes in every attention layer (PEFT prefix tuning)"

    @property
    def keeps_training_state(self) -> bool:  # type: ignore[override]
        return self.cfg.prefix_projection  # PEFT saves only the MLP's output

    def peft_config(self, model) -> PrefixTuningConfig:
        return PrefixTuningConfig(
            task_type=model.peft_task_type,
            num_virtual_tokens=self.cfg.num_virtual_tokens,
            prefix_projection=self.cfg.prefix_projection,
            encoder_hidden_size=self.cfg.encoder_hidden_size,
        )
