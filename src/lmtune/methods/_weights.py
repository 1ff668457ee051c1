"""Helpers the strategies share for writing and reading tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lmtune.io import atomic_write


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def load_into(module: torch.nn.Module, path: Path) -> None:
    """Load a partial state dict; every saved tensor must find its place (a mismatch is a real error)."""
    state = load_file(str(path))
    result = module.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{path} holds weights this model has no place for: {result.unexpected_keys[:5]}")


def freeze(module: torch.nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)
