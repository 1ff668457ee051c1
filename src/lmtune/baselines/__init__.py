"""Baselines for `lmtune compare`: what a fine-tuned model is held against. One file each, registered with
`@register_baseline`, chosen by name like strategies and tasks.

To add one: write `baselines/<name>.py` with a config class (`name: Literal["<name>"]`) and a `Baseline`
subclass decorated with `@register_baseline`, then import it below.
"""

# Each import registers one baseline.
from lmtune.baselines import prompting, scratch, tfidf  # noqa: F401
from lmtune.baselines.base import BASELINES, Baseline, BaselineConfig, register_baseline

__all__ = ["BASELINES", "Baseline", "BaselineConfig", "register_baseline"]
