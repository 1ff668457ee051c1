"""IA3: a learned per-channel scale l on some modules' activations, served as an addition to their outputs.

PEFT scales a module's output (keys, values: out·l, bias included) or, on feed-forward modules, its input
(W·(l·x) + b). Both are the module's own output plus a delta that depends on the row's scale only:
    output scaling:   out·l        = out + out·(l - 1)
    input scaling:    W·(l·x) + b  = out + W·((l - 1)·x)
so rows of different IA3 adapters (and of LoRA, bottleneck, ...) share one forward pass. The input-scaling delta
reads the served module's own weight, never a copy of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lmtune.errors import LmtuneError
from lmtune.serve.kinds.base import KindReader, check_shape, in_out_features, module_path, register_kind
from lmtune.serve.kinds.weight_delta import WeightDeltaPart

_KEY = re.compile(r"^(?P<module>.+)\.ia3_l$")


@dataclass(frozen=True)
class SharedWeight:
    """The served module's weight as [out, in]; a holder, so stacking per row never copies or gathers it."""

    weight: torch.Tensor


@dataclass
class IA3Module:
    scale_minus_one: torch.Tensor  # [out] (output scaling) or [in] (input scaling)
    scales_input: bool
    shared: SharedWeight | None  # input scaling only


@dataclass
class IA3Part(WeightDeltaPart):
    modules: dict[str, IA3Module]

    def tensors(self) -> list[torch.Tensor]:
        return [m.scale_minus_one for m in self.modules.values()]  # the module weights are the base model's

    def group_key(self, module: str):
        return ("ia3", self.modules[module].scales_input)

    def delta(self, module: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        weights = self.modules[module]
        scale = weights.scale_minus_one
        if weights.scales_input:
            return _linear(x.to(scale.dtype) * scale, weights.shared.weight).to(out.dtype)
        return (out.to(scale.dtype) * scale).to(out.dtype)

    @classmethod
    def stack(cls, parts: Sequence[IA3Part], module: str) -> Any:
        first = parts[0].modules[module]
        return {"scales": torch.stack([p.modules[module].scale_minus_one for p in parts])[:, None, :],
                "shared": first.shared}

    @classmethod
    def apply(cls, stacked: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        scales = stacked["scales"]  # [rows, 1, features]
        if stacked["shared"] is not None:
            return _linear(x.to(scales.dtype) * scales, stacked["shared"].weight).to(out.dtype)
        return (out.to(scales.dtype) * scales).to(out.dtype)


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The module's map without its bias, in the weight's dtype (as PEFT feeds the scaled input to the module)."""
    return nn.functional.linear(x.to(weight.dtype), weight)


def _weight_out_in(module: nn.Module) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return module.weight
    if isinstance(module, Conv1D):  # GPT-2 stores [in, out]
        return module.weight.T
    raise LmtuneError(f"IA3 on a {type(module).__name__} module cannot be served (only linear layers)")


@register_kind
class IA3Reader(KindReader):
    name = "IA3"

    def read(self, config: dict[str, Any], tensors: dict[str, torch.Tensor], model) -> IA3Part:
        modules_of_model = dict(model.named_modules())
        modules = {}
        for key, tensor in tensors.items():
            match = _KEY.match(key)
            if match is None:
                raise LmtuneError(f"unexpected tensor {key!r} in an IA3 adapter (modules_to_save cannot be served)")
            path = module_path(match["module"], model)
            module = modules_of_model[path]
            in_features, out_features = in_out_features(module)
            # PEFT shapes the scale [1, in] on feed-forward modules (input scaling), [out, 1] elsewhere.
            scales_input = tuple(tensor.shape) == (1, in_features) and in_features != 1
            if not scales_input:
                check_shape(f"IA3 scale of {path}", tensor, (out_features, 1))
            shared = SharedWeight(_weight_out_in(module)) if scales_input else None
            modules[path] = IA3Module(tensor.float().flatten() - 1, scales_input, shared)
        return IA3Part(modules)
