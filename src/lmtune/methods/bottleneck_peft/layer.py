"""The tuner layer: one wrapped Linear/Conv1D module with any number of named bottleneck adapters."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, _get_in_out_features
from torch import nn
from transformers.pytorch_utils import Conv1D

from lmtune.methods.bottleneck_peft.config import BottleneckConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
BASE_ROW = "__base__"  # PEFT's name, in `adapter_names`, for a row that gets no adapter


def bottleneck_parameter_count(kind: str, in_features: int, out_features: int, size: int, learned_scaling: bool) -> int:
    """Trainable parameters of one adapter: down (weight + bias), up (weight + bias), and the learned scale."""
    down_width = out_features if kind == "series" else in_features
    return down_width * size + size + size * out_features + out_features + int(learned_scaling)


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """Series: out = f(x) + s·up(act(down(f(x)))). Parallel: out = f(x) + s·up(act(down(x))).

    Each adapter is a set of entries keyed by its name, so PEFT's generic code (set_adapter, delete_adapter,
    state-dict naming `…bottleneck_down.weight`) works unchanged.
    """

    # Containers of trainable weights, keyed by adapter name (names start with the tuner prefix "bottleneck_").
    adapter_layer_names = ("bottleneck_down", "bottleneck_up", "bottleneck_scale")
    other_param_names = ("bottleneck_act", "bottleneck_dropout", "bottleneck_kind", "bottleneck_fixed_scale")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: BottleneckConfig):
        super().__init__()
        if not isinstance(base_layer, (nn.Linear, Conv1D)):
            raise ValueError(f"bottleneck adapters wrap Linear or Conv1D modules, not {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.in_features, self.out_features = _get_in_out_features(base_layer)
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_scale = nn.ParameterDict()  # learned scales only
        self.bottleneck_act = nn.ModuleDict()
        self.bottleneck_dropout = nn.ModuleDict()
        self.bottleneck_kind: dict[str, str] = {}
        self.bottleneck_fixed_scale: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: BottleneckConfig) -> None:
        """Add the adapter `adapter_name`: up-projection weight and bias zero, so it starts as the identity."""
        down_width = self.out_features if config.kind == "series" else self.in_features
        # nn.Linear's default init for down (kaiming-uniform, a=√5), as LLM-Adapters' code does.
        self.bottleneck_down[adapter_name] = nn.Linear(down_width, config.bottleneck_size)
        up = nn.Linear(config.bottleneck_size, self.out_features)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        self.bottleneck_up[adapter_name] = up
        if config.learned_scaling:
            self.bottleneck_scale[adapter_name] = nn.Parameter(torch.ones(()))
        else:
            self.bottleneck_fixed_scale[adapter_name] = float(config.scaling)
        self.bottleneck_act[adapter_name] = ACTIVATIONS[config.non_linearity]()
        self.bottleneck_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.bottleneck_kind[adapter_name] = config.kind
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError("bottleneck adapters are non-linear and cannot be merged into the weights; use unload()")

    def _delta(self, adapter_name: str, source: torch.Tensor) -> torch.Tensor:
        """The adapter's addition for `source` (the module's output for series, its input for parallel)."""
        down = self.bottleneck_down[adapter_name]
        hidden = self._cast_input_dtype(source, down.weight.dtype)
        hidden = self.bottleneck_act[adapter_name](down(self.bottleneck_dropout[adapter_name](hidden)))
        return self.bottleneck_up[adapter_name](hidden) * self._scale(adapter_name)

    def _scale(self, adapter_name: str) -> torch.Tensor | float:
        if adapter_name in self.bottleneck_scale:
            return self.bottleneck_scale[adapter_name]
        return self.bottleneck_fixed_scale[adapter_name]

    def _source(self, adapter_name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        return result if self.bottleneck_kind[adapter_name] == "series" else x

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        if adapter_names is not None:
            return self._mixed_batch_forward(x, result, adapter_names)
        # Several active adapters stack: a series adapter reads the output so far, a parallel one the input.
        for name in self.active_adapters:
            if name in self.bottleneck_down:
                result = result + self._delta(name, self._source(name, x, result)).to(result.dtype)
        return result

    def _mixed_batch_forward(self, x: torch.Tensor, result: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        """Row i gets adapter `adapter_names[i]` alone (`__base__`: none), as PEFT's LoRA does for mixed batches."""
        if len(adapter_names) != len(x):
            raise ValueError(f"adapter_names has {len(adapter_names)} names for a batch of {len(x)} rows")
        mixed = result
        for name in set(adapter_names) - {BASE_ROW}:
            if name not in self.bottleneck_down:
                continue
            rows = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=result.device)
            source = self._source(name, x, result).index_select(0, rows)
            mixed = mixed.index_add(0, rows, self._delta(name, source).to(result.dtype))
        return mixed

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()
