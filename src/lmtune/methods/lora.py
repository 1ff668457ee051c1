"""LoRA through PEFT, with per-architecture default target modules."""

from __future__ import annotations

from typing import Literal

from peft import LoraConfig
from pydantic import Field

from lmtune.config.schema import MethodConfig
from lmtune.forms import WEIGHT_DELTA
from lmtune.methods._peft import PeftStrategy
from lmtune.methods.base import register_strategy
from lmtune.models.targets import default_lora_targets


class LoraMethodConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    """LoRA: a trainable low-rank update B·A beside each target linear layer (PEFT)."""
    rank: int = Field(8, gt=0)
    """Rank r of the update."""
    alpha: float = Field(16.0, gt=0)
    """Scaling numerator: the update is multiplied by alpha / rank (alpha / sqrt(rank) with rslora)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | str | None = None
    """Module name suffixes (or a regex, or `all-linear`); none picks every linear map in the blocks for known
    architectures (bert, llama, gpt2, ...)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train too."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(rank)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


@register_strategy
class Lora(PeftStrategy):
    name = "lora"
    config_cls = LoraMethodConfig
    peft_type = "LORA"
    form = WEIGHT_DELTA
    default_learning_rate = 1e-3
    summary = "low-rank updates on the target linear layers (PEFT LoRA)"

    def peft_config(self, model) -> LoraConfig:
        cfg = self.cfg
        return LoraConfig(
            task_type=model.peft_task_type,
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules or default_lora_targets(model.backbone.model_type),
            bias=cfg.bias,
            use_rslora=cfg.use_rslora,
            use_dora=cfg.use_dora,
        )
