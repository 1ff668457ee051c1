"""Prefix tuning: per-layer key/value vectors before each row's text, as PEFT's `get_prompt` lays them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmtune.errors import LmtuneError
from lmtune.serve.forms import BodyPart
from lmtune.serve.kinds.base import KindReader, check_shape, register_kind


@dataclass
class KVPrefixPart(BodyPart):
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values): [kv_heads, virtual, head_dim]

    def tensors(self) -> list[torch.Tensor]:
        return [t for pair in self.layers for t in pair]

    def kv_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.layers


@register_kind
class PrefixTuningReader(KindReader):
    name = "PREFIX_TUNING"

    def read(self, config: dict[str, Any], tensors: dict[str, torch.Tensor], model) -> KVPrefixPart:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_PREFIX_TUNING_POSTPROCESS_MAPPING

        model_type = model.config.model_type
        if (config.get("num_transformer_submodules") or 1) != 1 or model_type in TRANSFORMERS_MODELS_TO_PREFIX_TUNING_POSTPROCESS_MAPPING:
            raise LmtuneError(f"prefix tuning on {model_type} models cannot be served yet")
        virtual, layers = config["num_virtual_tokens"], config["num_layers"]
        heads, token_dim = config["num_attention_heads"], config["token_dim"]
        if layers != model.config.num_hidden_layers:
            raise LmtuneError(
                f"the prefix has {layers} layers, the served base model {model.config.num_hidden_layers}: "
                "it was trained for another base model"
            )
        flat = tensors["prompt_embeddings"]
        check_shape("the key/value prefix", flat, (virtual, layers * 2 * token_dim))
        # PEFT's get_prompt: [virtual, layers·2, heads, head_dim] → [layers·2, heads, virtual, head_dim].
        grid = flat.float().view(virtual, layers * 2, heads, token_dim // heads).permute(1, 2, 0, 3).contiguous()
        return KVPrefixPart([(grid[2 * i], grid[2 * i + 1]) for i in range(layers)])
