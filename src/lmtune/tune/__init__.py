"""Hyper-parameter search over dotted config keys: Optuna samplers, differential evolution, PBT, k-fold CV."""
