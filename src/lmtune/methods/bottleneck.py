"""Series (Houlsby, Pfeiffer) and parallel bottleneck adapters, as in the LLM-Adapters paper, through our own PEFT
tuner (`bottleneck_peft`: PEFT lacks them), so they save, load and serve in PEFT's format."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.config.schema import MethodConfig
from lmtune.forms import WEIGHT_DELTA
from lmtune.methods._peft import PeftStrategy
from lmtune.methods.base import register_strategy
from lmtune.methods.bottleneck_peft import BottleneckConfig


class BottleneckMethodConfig(MethodConfig):
    name: Literal["bottleneck"] = "bottleneck"
    """Bottleneck adapters: a small down-projection → non-linearity → up-projection on chosen modules (LLM-Adapters)."""
    kind: Literal["series", "parallel"] = "series"
    """`series`: on the module's output, y + up(act(down(y))); `parallel`: beside it, reading its input x,
    f(x) + up(act(down(x)))."""
    bottleneck_size: int = Field(64, gt=0)
    """Width of the bottleneck. The paper uses 256 for 7B models (hidden 4096); scale it with the hidden size."""
    non_linearity: Literal["tanh", "relu", "gelu", "silu"] = "tanh"
    """Activation between the projections (the paper's code uses tanh)."""
    scaling: float | Literal["learned"] = 1.0
    """Factor on the adapter's output, or `learned`: a trainable scalar starting at 1 (scaled parallel adapter)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""
    placement: Literal["attention", "mlp", "both"] = "mlp"
    """Which module of every block gets an adapter: the attention output projection, the MLP output projection, or
    both (Houlsby). Series + mlp is Pfeiffer's adapter."""
    target_modules: list[str] | str | None = None
    """Module name suffixes or a regex; replaces `placement` (none uses the placement's modules for known
    architectures: bert, roberta, llama, mistral, qwen2, gemma3, gpt2)."""


@register_strategy
class Bottleneck(PeftStrategy):
    name = "bottleneck"
    config_cls = BottleneckMethodConfig
    peft_type = "BOTTLENECK"
    form = WEIGHT_DELTA
    default_learning_rate = 1e-3
    summary = "series or parallel bottleneck adapters on the attention and/or MLP output projections"

    def peft_config(self, model) -> BottleneckConfig:
        cfg = self.cfg
        return BottleneckConfig(
            task_type=model.peft_task_type,
            kind=cfg.kind,
            bottleneck_size=cfg.bottleneck_size,
            non_linearity=cfg.non_linearity,
            scaling=cfg.scaling,
            dropout=cfg.dropout,
            placement=cfg.placement,
            target_modules=cfg.target_modules,
        )

    def parameter_formula(self) -> str:
        """How many parameters train (besides the head), in words: what `lmtune methods` prints."""
        b = self.cfg.bottleneck_size
        if self.cfg.kind == "series":
            per_adapter, widths = f"2 × d_out × {b} + {b} + d_out", "d_out: the wrapped module's output width"
        else:
            per_adapter, widths = f"d_in × {b} + {b} + {b} × d_out + d_out", "d_in, d_out: the wrapped module's widths"
        learned = " + 1 (the learned scale)" if self.cfg.scaling == "learned" else ""
        return f"{per_adapter}{learned} per placed adapter (down and up weights and biases; {widths})"
