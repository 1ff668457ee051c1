"""Hyper-parameter search over dotted config keys: Optuna samplers, differential evolution, PBT, k-fold CV."""

# Each import registers one search algorithm (their libraries are imported inside functions: registering is cheap).
from lmtune.tune import de_search, optuna_search, pbt_search  # noqa: E402,F401
