"""Baselines for `lmtune compare`: what a fine-tuned model is held against. One file each, registered with
`@register_baseline`, chosen by name like strategies and tasks.

To add one: write `baselines/<name>.py` with a config class (`name: Literal["<name>"]`) and a `Baseline`
subclass decorated with `@register_baseline`, then import it below.
"""

# Each import registers one baseline.
from lmtune.baselines import prompting, scratch, tfidf  # noqa: F401
from lmtune.baselines.base import (
    Baseline,
    BaselineConfig,
    baseline_class,
    baseline_config_class,
    build_baseline,
    register_baseline,
    registered_baselines,
)

__all__ = [
    "Baseline",
    "BaselineConfig",
    "baseline_class",
    "baseline_config_class",
    "build_baseline",
    "register_baseline",
    "registered_baselines",
]
