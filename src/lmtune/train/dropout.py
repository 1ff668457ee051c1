"""Dropout from 16-bit random numbers (`train.fast_dropout`): the same inverted dropout as `torch.nn.Dropout`, at
under half its cost on the CPU (forward and backward of a 1,600 x 1,536 input, one thread: 15 ms -> 9 ms
above no dropout).

Why lmtune writes this: on the CPU, torch draws one 32-bit float per element for a dropout mask (`bernoulli_`,
~5 ns an element on this project's machines). LoRA runs dropout on the input of every adapted layer, so a LoRA step
on SmolLM2-135M draws 210 masks of 1,600 x 576-1,536 elements; in a profile of that step `bernoulli_` took 9.7%
(benchmarks/RESULTS.md, issue 19). Here one 64-bit draw (`random_`, ~0.7 ns per 16 bits) gives four elements 16 bits
each, and an element is kept where its 16 bits reach a threshold.

Exact in distribution: every element is dropped independently with probability q / 65536, q = round(p * 65536),
and kept elements are scaled by 1 / (1 - q / 65536), so the expectation is the input's, as with torch's dropout.
For p = 0.1 that is p = 0.1000061 (torch's own float draw rounds p too, to 2^-24). The mask is kept as booleans for
the backward pass (what torch's native dropout keeps). `auto` leaves CUDA on torch's fused dropout kernel: one
launch there against three here, and not measured.
"""

from __future__ import annotations

import torch
from torch import nn

LEVELS = 1 << 16  # 16-bit thresholds


def dropped_levels(p: float) -> int:
    """p rounded to a multiple of 2^-16, in units of 2^-16: an element is dropped where its 16 bits fall below it."""
    return round(p * LEVELS)


def kept_fraction(p: float) -> float:
    """The probability that an element is kept, for dropout probability p."""
    return 1.0 - dropped_levels(p) / LEVELS


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Booleans, True with probability kept_fraction(p), independently: 16 random bits per element."""
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    bits = words.view(torch.int16)[:count].view(shape)  # uniform on [-32768, 32767], four per 64-bit draw
    return bits >= dropped_levels(p) - LEVELS // 2


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale, with only the boolean mask saved for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


class FastDropout(nn.Dropout):
    """`nn.Dropout` with masks from 16-bit random numbers. A subclass, so code that reads `.p` (attention layers
    hand it to their kernels) or checks `isinstance(m, nn.Dropout)` sees what it saw before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = kept_fraction(self.p)
        if not self.training or kept in (0.0, 1.0):  # identity, or all dropped: torch's own path
            return super().forward(x)
        return _MaskedScale.apply(x, keep_mask(x.shape, self.p, x.device), 1.0 / kept)


def use_fast_dropout(model: nn.Module) -> int:
    """Turn every plain `nn.Dropout` with p > 0 in `model` into a FastDropout in place (its class, nothing else:
    no weights, no saved format change). Returns how many FastDropouts the model then has."""
    for module in model.modules():
        if type(module) is nn.Dropout and module.p > 0:
            module.__class__ = FastDropout
    return sum(isinstance(m, FastDropout) for m in model.modules())
