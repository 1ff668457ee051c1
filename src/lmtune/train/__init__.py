"""Training on transformers' Trainer, run directories and artifacts."""

from lmtune.train.runner import RunResult, train

__all__ = ["RunResult", "train"]
