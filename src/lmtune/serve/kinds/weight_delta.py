"""What LoRA and bottleneck adapters share: an addition to some modules' outputs, computed per row.

Rows of one group (same kind of delta, e.g. every LoRA row on a module) are computed together: each row's weights
are gathered into a stacked tensor, padded with zeros to the group's widest rank, and applied with two batched
matmuls (the idea of Punica/S-LoRA's SGMV, in plain torch). `delta` is the slow reference: one adapter at a time.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from lmtune.serve.forms import BodyPart


def pad_to(tensor: torch.Tensor, dim: int, size: int, left: bool = False) -> torch.Tensor:
    """Zero-pad `tensor` along `dim` to `size` (after it, or before it with `left`). Zero rank/bottleneck units add
    exactly nothing; masked zeros before a row's cache are never attended to."""
    missing = size - tensor.size(dim)
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    parts = [tensor.new_zeros(shape), tensor] if left else [tensor, tensor.new_zeros(shape)]
    return torch.cat(parts, dim=dim)


class WeightDeltaPart(BodyPart):
    modules: dict[str, Any]

    def module_names(self) -> list[str]:
        return list(self.modules)

    @abstractmethod
    def group_key(self, module: str) -> Hashable:
        """Rows whose parts share this key on `module` are computed in one batched call of `stack`/`apply`."""

    @abstractmethod
    def delta(self, module: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Slow reference: this adapter's addition to `out` (the module's output for input `x`)."""

    @classmethod
    @abstractmethod
    def stack(cls, parts: Sequence[WeightDeltaPart], module: str) -> Any:
        """Gather the parts' weights for `module`, one entry per row, for `apply` (computed once per batch plan)."""

    @classmethod
    @abstractmethod
    def apply(cls, stacked: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Fast path: each row's addition, from the stacked weights of its own adapter."""
