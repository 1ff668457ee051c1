"""Fine-tuning strategies: one file each, registered with `@register_strategy`.

To add one: write `methods/<name>.py` with a config class (`name: Literal["<name>"]`) and a `Strategy`
subclass decorated with `@register_strategy`, then import it below. Nothing else changes.
"""

from lmtune.methods.base import STRATEGIES, Strategy, register_strategy

# Each import registers one strategy.
from lmtune.methods import full, freeze, lora, bottleneck, prompt_tuning, p_tuning, prefix_tuning, peft_any  # noqa: E402,F401

__all__ = ["STRATEGIES", "Strategy", "register_strategy"]
