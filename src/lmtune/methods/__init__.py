"""Fine-tuning strategies: one file each, registered with `@register_strategy`.

To add one: write `methods/<name>.py` with a config class (`name: Literal["<name>"]`) and a `Strategy`
subclass decorated with `@register_strategy`, then import it below. Nothing else changes.
"""

# Each import registers one strategy.
from lmtune.methods import bottleneck, freeze, full, lora, p_tuning, peft_any, prefix_tuning, prompt_tuning  # noqa: E402,F401
from lmtune.methods.base import STRATEGIES, Strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "register_strategy"]
