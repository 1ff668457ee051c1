"""`train.fsdp` → TrainingArguments' `fsdp` and `fsdp_config` (Trainer and accelerate do the sharding)."""

from __future__ import annotations

from typing import Any

from lmtune.config.schema import FsdpConfig
from lmtune.errors import LmtuneError


def fsdp_arguments(fsdp: FsdpConfig | None, model) -> dict[str, Any]:
    """The TrainingArguments for `train.fsdp` (none: {}). The layers to wrap default to the base model's own
    `_no_split_modules`: lmtune's task model wraps the base, so accelerate would not find them on it."""
    if fsdp is None:
        return {}
    layers = fsdp.wrap_layers or sorted(_no_split_modules(model))
    if not layers:
        raise LmtuneError("train.fsdp: the base model names no layer class to shard by (_no_split_modules); "
                          "set train.fsdp.wrap_layers=[<its decoder layer class>]")
    config = {
        **fsdp.options,
        "version": 2,
        "reshard_after_forward": fsdp.sharding == "full_shard",
        "cpu_offload": fsdp.cpu_offload,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": layers,
    }
    return {"fsdp": True, "fsdp_config": config}


def _no_split_modules(model) -> set[str]:
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def check_sharded(fsdp: FsdpConfig | None, trainer) -> None:
    """accelerate (1.15) turns its FSDP plugin on only for GPU-type processes: CPU processes (gloo) would quietly
    train DDP, each holding the whole model. Said on every rank alike, so they all stop together."""
    if fsdp is not None and trainer.args.world_size > 1 and not trainer.is_fsdp_enabled:
        raise LmtuneError(
            f"train.fsdp is set but accelerate did not shard the model ({trainer.accelerator.distributed_type}): "
            "FSDP runs on GPU processes only; on CPU processes drop train.fsdp (they train DDP)"
        )


def gather_trainable(trainer) -> dict[str, Any] | None:
    """Under FSDP, the full trainable tensors, as CPU copies; every rank must call it (each sharded parameter is
    all-gathered, in the same order everywhere). None without FSDP: every rank already holds the whole model."""
    if not trainer.is_fsdp_enabled:
        return None
    full = {}
    for name, parameter in trainer.model.named_parameters():
        if parameter.requires_grad:
            whole = parameter.full_tensor() if hasattr(parameter, "full_tensor") else parameter  # FSDP2: a DTensor
            full[name] = whole.detach().cpu()
    return full
