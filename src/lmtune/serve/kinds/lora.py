"""LoRA: out += scale · B(A(x)) on the target modules, read from PEFT's saved adapter."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmtune.errors import LmtuneError
from lmtune.serve.kinds.base import KindReader, check_shape, in_out_features, module_path, register_kind
from lmtune.serve.kinds.weight_delta import WeightDeltaPart, pad_to

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)\.weight$")


@dataclass
class LoraPart(WeightDeltaPart):
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    """module → (A [r, in], B·scale [out, r]); the scale is folded into B once, at load."""

    def tensors(self) -> list[torch.Tensor]:
        return [t for pair in self.modules.values() for t in pair]

    def group_key(self, module: str):
        return "lora"

    def delta(self, module: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        down, up = self.modules[module]
        return (x.to(down.dtype) @ down.T @ up.T).to(out.dtype)

    @classmethod
    def stack(cls, parts: Sequence[LoraPart], module: str) -> Any:
        rank = max(p.modules[module][0].size(0) for p in parts)
        downs = torch.stack([pad_to(p.modules[module][0], 0, rank) for p in parts])  # [rows, r, in]
        ups = torch.stack([pad_to(p.modules[module][1], 1, rank) for p in parts])  # [rows, out, r]
        return downs.transpose(1, 2).contiguous(), ups.transpose(1, 2).contiguous()

    @classmethod
    def apply(cls, stacked: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        downs, ups = stacked
        return torch.bmm(torch.bmm(x.to(downs.dtype), downs), ups).to(out.dtype)


@register_kind
class LoraReader(KindReader):
    name = "LORA"

    def read(self, config: dict[str, Any], tensors: dict[str, torch.Tensor], model) -> LoraPart:
        for option, plain in (("use_dora", False), ("bias", "none")):
            if config.get(option, plain) != plain:
                raise LmtuneError(f"LoRA adapters with {option}={config[option]!r} cannot be served yet (only plain LoRA)")
        modules_of_model = dict(model.named_modules())
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            match = _KEY.match(key)
            if match is None:
                raise LmtuneError(f"unexpected tensor {key!r} in a LoRA adapter (modules_to_save cannot be served)")
            pairs.setdefault(match["module"], {})[match["which"]] = tensor
        modules = {}
        for saved, pair in pairs.items():
            path = module_path(saved, model)
            rank = pair["A"].size(0)
            in_features, out_features = in_out_features(modules_of_model[path])
            check_shape(f"LoRA A of {path}", pair["A"], (rank, in_features))
            check_shape(f"LoRA B of {path}", pair["B"], (out_features, rank))
            modules[path] = (pair["A"].float(), pair["B"].float() * _scale(config, path, rank))
        return LoraPart(modules)


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    """PEFT's scaling: alpha / r (alpha / √r with rsLoRA), with per-module rank/alpha patterns."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = value
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank

