"""Devices and precision, in one place: where a model runs, putting a batch beside it, and which dtype and mixed
precision `auto` means on this machine.

Every forward outside Trainer (evaluation, predict, generation, baselines, pretraining's perplexity, the server)
moves its inputs with `to_model_device`; models built outside Trainer go to `default_device()` through `place`.
No other module names a CUDA device (tests/test_device.py greps the source), so a run behaves the same on a CPU,
one GPU or, under torchrun, the GPU of each rank. Low in the layering: imports only torch and lmtune.errors.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import torch

from lmtune.errors import LmtuneError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""model.dtype names → torch dtypes (`auto` is resolved first: `resolve_dtype`)."""


def cuda_available() -> bool:
    return torch.cuda.is_available()


def default_device() -> torch.device:
    """Where models built outside Trainer run: the rank's GPU under torchrun (LOCAL_RANK), else the first GPU,
    else the CPU — the device Trainer picks too."""
    if not cuda_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def sharded_backend() -> str | None:
    """The process-group backend of an FSDP run: on CUDA gloo beside nccl (as `accelerate launch --use_fsdp` sets
    up) for the collectives on CPU tensors that offloaded or gathered FSDP state needs; None: accelerate's default."""
    return "cuda:nccl,cpu:gloo" if cuda_available() else None


def names_gpu(name: str) -> bool:
    """Whether a device name (`--device cuda:1`) asks for a CUDA GPU; asks nothing of CUDA itself."""
    return name.startswith("cuda")


def named_device(name: str) -> torch.device:
    """`auto` → `default_device()`; anything else (`cpu`, `cuda`, `cuda:1`) as torch reads it, checked here so a
    missing GPU is refused with the fix rather than at the first forward."""
    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise LmtuneError(f"device {name!r} is not a device torch knows ({err}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not cuda_available():
        raise LmtuneError(f"device {name!r}: this machine has no CUDA GPU torch can use; use auto or cpu")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer): where its inputs must go."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """A tensor, or a mapping of tensors (other values kept), on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    raise TypeError(f"to_device takes a tensor or a mapping of tensors, not {type(batch).__name__}")


def to_model_device(batch: Any, model: torch.nn.Module) -> Any:
    """`batch` (a tensor or a mapping of tensors) beside `model`'s weights."""
    return to_device(batch, model_device(model))


def is_quantized(module: torch.nn.Module) -> bool:
    """A bitsandbytes-quantised transformers model (PEFT wrappers forward the attribute to it): placed by
    `device_map` at load, and `.to()` must not move it."""
    return bool(getattr(module, "is_loaded_in_4bit", False) or getattr(module, "is_loaded_in_8bit", False))


def place(model: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """`model` on `device` (default: `default_device()`). A quantised body stays where bitsandbytes put it; its
    siblings (a task head) follow it."""
    if is_quantized(model):
        return model
    quantized = [child for child in model.children() if is_quantized(child)]
    if not quantized:
        return model.to(device or default_device())
    for child in model.children():
        if not is_quantized(child):
            child.to(model_device(quantized[0]))
    return model


def bf16_supported() -> bool:
    return cuda_available() and torch.cuda.is_bf16_supported()


def resolve_dtype(name: str) -> str:
    """`auto` → bfloat16 where a CUDA GPU supports it, float32 elsewhere (CPUs, older GPUs: fp16 weights without
    a loss scaler lose small gradients); an explicit name is kept."""
    if name != "auto":
        return name
    return "bfloat16" if bf16_supported() else "float32"


def resolve_precision(precision: str, dtype: str) -> str:
    """`auto` mixed precision: fp16 for a float16 base, bf16 on GPUs that have it, fp16 on other GPUs, none (fp32)
    on the CPU — where autocast would only add casts."""
    if precision != "auto":
        return precision
    if dtype == "float16":
        return "fp16"
    if not cuda_available():
        return "fp32"
    return "bf16" if bf16_supported() else "fp16"


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[resolve_dtype(name)]


def check_quantization(quantization: str) -> None:
    """4-bit and 8-bit bases need bitsandbytes on a CUDA GPU: refuse anything else before a model loads."""
    if quantization == "none":
        return
    missing = []
    if not cuda_available():
        missing.append("a CUDA GPU (torch sees none on this machine)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes (pip install 'lmtune[gpu]')")
    if missing:
        raise LmtuneError(
            f"model.quantization={quantization} loads the base through bitsandbytes, which needs "
            + " and ".join(missing) + ". Run on a machine with a CUDA GPU and bitsandbytes installed, or set "
            "model.quantization=none (and model.dtype=bfloat16 to halve the memory without quantising)."
        )


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory allocated on a GPU since the last reset, in MiB; None on the CPU (train/memory.py reads RSS)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timings); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_precision(precision: str, dtype: str = "float32") -> dict[str, bool]:
    """TrainingArguments' mixed-precision flags for `train.precision` (`auto` resolved here when still unset)."""
    resolved = resolve_precision(precision, dtype)
    if resolved == "fp16" and not cuda_available():
        raise LmtuneError("train.precision=fp16 needs a CUDA GPU (torch's CPU autocast has no loss scaler); "
                          "use train.precision=bf16 or fp32 on the CPU")
    return {"bf16": resolved == "bf16", "fp16": resolved == "fp16"}


def check_master_weights(model: torch.nn.Module, precision: str) -> None:
    """fp16 autocast's loss scaler unscales fp32 gradients only: trainable float16 weights (a float16 base under a
    strategy that trains the base itself) would fail at the first step, after the model loaded. Refuse now."""
    if precision != "fp16":
        return
    half = [name for name, p in model.named_parameters() if p.requires_grad and p.dtype == torch.float16]
    if half:
        raise LmtuneError(f"train.precision=fp16 cannot train float16 weights ({half[0]}, ...): use model.dtype=bfloat16 "
                          "or float32 for a strategy that trains the base's own weights, or train.precision=bf16")
