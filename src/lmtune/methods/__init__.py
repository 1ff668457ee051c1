"""Fine-tuning strategies: one file each, registered with `@register_strategy`.

To add one: write `methods/<name>.py` with a config class (`name: Literal["<name>"]`) and a `Strategy`
subclass decorated with `@register_strategy`, then import it below. Nothing else changes.
"""

from lmtune.methods.base import (
    Strategy,
    build_strategy,
    method_config_class,
    register_strategy,
    registered_strategies,
    strategy_class,
)

# Each import registers one strategy.
from lmtune.methods import full, freeze, lora, bottleneck, prompt_tuning, p_tuning, prefix_tuning, peft_any  # noqa: E402,F401

__all__ = [
    "Strategy",
    "build_strategy",
    "method_config_class",
    "register_strategy",
    "registered_strategies",
    "strategy_class",
]
