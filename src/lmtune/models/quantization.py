"""4-bit and 8-bit bases through bitsandbytes (QLoRA): the loading arguments, and PEFT's preparation for training.

`runconfig.resolve` has already refused a quantised base on a machine without CUDA or bitsandbytes
(`lmtune.device.check_quantization`), so nothing here runs without them.
"""

from __future__ import annotations

from typing import Any

import torch

from lmtune.device import default_device, is_quantized
from lmtune.errors import LmtuneError


def quantized_loading(quantization: str, dtype: torch.dtype) -> dict[str, Any]:
    """`from_pretrained` arguments for `model.quantization`: none adds nothing. 4-bit is QLoRA's recipe (NF4,
    double quantisation, compute in the base's dtype); the whole model goes on this process's GPU."""
    if quantization == "none":
        return {}
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": default_device()}}


def prepare_for_training(body: torch.nn.Module) -> torch.nn.Module:
    """PEFT's `prepare_model_for_kbit_training` on a quantised body (norms in fp32, input gradients on, every
    base weight frozen); other bodies are returned as they are. Gradient checkpointing is left to its own option."""
    if not is_quantized(body):
        return body
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(body, use_gradient_checkpointing=False)


def apply_strategy(strategy, model):
    """`strategy.apply(model)`; on a quantised base, a strategy that unfreezes the base's own (integer) weights
    (full, freeze with layers) is refused with the fix instead of torch's "only floating point" error."""
    try:
        return strategy.apply(model)
    except RuntimeError as err:
        if is_quantized(model.body) and "floating point" in str(err):
            raise LmtuneError(f"method.name={strategy.name} trains the base's own weights, which a quantised base "
                              "(model.quantization) cannot: use lora or another adapter, or model.quantization=none") from None
        raise
