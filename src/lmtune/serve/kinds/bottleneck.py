"""Bottleneck adapters (lmtune's PEFT tuner): series out += s·up(act(down(out))), parallel out += s·up(act(down(x)))."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmtune.errors import LmtuneError
from lmtune.methods.bottleneck_peft.layer import ACTIVATIONS
from lmtune.serve.kinds.base import KindReader, check_shape, in_out_features, module_path, register_kind
from lmtune.serve.kinds.weight_delta import WeightDeltaPart, pad_to

_KEY = re.compile(r"^(?P<module>.+)\.bottleneck_(?P<what>down\.weight|down\.bias|up\.weight|up\.bias|scale)$")


@dataclass
class BottleneckModule:
    down_weight: torch.Tensor  # [size, source]
    down_bias: torch.Tensor  # [size]
    up_weight: torch.Tensor  # [out, size]  (scale folded in)
    up_bias: torch.Tensor  # [out]  (scale folded in)


@dataclass
class BottleneckPart(WeightDeltaPart):
    modules: dict[str, BottleneckModule]
    kind: str
    """series (reads the module's output) or parallel (reads its input)."""
    activation: str

    def tensors(self) -> list[torch.Tensor]:
        return [t for m in self.modules.values() for t in (m.down_weight, m.down_bias, m.up_weight, m.up_bias)]

    def group_key(self, module: str):
        # Every activation the adapters use is 0 at 0, so zero-padded units stay silent; the kind decides the source.
        return ("bottleneck", self.kind, self.activation)

    def delta(self, module: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        weights = self.modules[module]
        source = (out if self.kind == "series" else x).to(weights.down_weight.dtype)
        hidden = ACTIVATIONS[self.activation]()(source @ weights.down_weight.T + weights.down_bias)
        return (hidden @ weights.up_weight.T + weights.up_bias).to(out.dtype)

    @classmethod
    def stack(cls, parts: Sequence[BottleneckPart], module: str) -> Any:
        size = max(p.modules[module].down_weight.size(0) for p in parts)
        mods = [p.modules[module] for p in parts]
        return {
            "series": parts[0].kind == "series",
            "act": ACTIVATIONS[parts[0].activation](),
            "down_w": torch.stack([pad_to(m.down_weight, 0, size) for m in mods]).transpose(1, 2).contiguous(),
            "down_b": torch.stack([pad_to(m.down_bias, 0, size) for m in mods])[:, None, :],
            "up_w": torch.stack([pad_to(m.up_weight, 1, size) for m in mods]).transpose(1, 2).contiguous(),
            "up_b": torch.stack([m.up_bias for m in mods])[:, None, :],
        }

    @classmethod
    def apply(cls, stacked: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        source = (out if stacked["series"] else x).to(stacked["down_w"].dtype)
        hidden = stacked["act"](torch.baddbmm(stacked["down_b"], source, stacked["down_w"]))
        return torch.baddbmm(stacked["up_b"], hidden, stacked["up_w"]).to(out.dtype)


@register_kind
class BottleneckReader(KindReader):
    name = "BOTTLENECK"

    def read(self, config: dict[str, Any], tensors: dict[str, torch.Tensor], model) -> BottleneckPart:
        kind, activation = config.get("kind", "series"), config.get("non_linearity", "tanh")
        if activation not in ACTIVATIONS:
            raise LmtuneError(f"bottleneck non_linearity {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            match = _KEY.match(key)
            if match is None:
                raise LmtuneError(f"unexpected tensor {key!r} in a bottleneck adapter")
            grouped.setdefault(match["module"], {})[match["what"]] = tensor.float()
        modules_of_model = dict(model.named_modules())
        modules = {}
        for saved, parts in grouped.items():
            path = module_path(saved, model)
            in_features, out_features = in_out_features(modules_of_model[path])
            size = parts["down.weight"].size(0)
            check_shape(f"bottleneck down of {path}", parts["down.weight"],
                        (size, out_features if kind == "series" else in_features))
            check_shape(f"bottleneck up of {path}", parts["up.weight"], (out_features, size))
            scale = parts["scale"].float() if "scale" in parts else torch.tensor(float(config.get("scaling", 1.0)))
            modules[path] = BottleneckModule(parts["down.weight"], parts["down.bias"],
                                             parts["up.weight"] * scale, parts["up.bias"] * scale)
        return BottleneckPart(modules, kind, activation)
