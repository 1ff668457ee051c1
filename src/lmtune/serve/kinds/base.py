"""The registry of servable PEFT types and the shared checks every reader uses.

A reader exists for each PEFT type a strategy declares a servable form for (`lmtune.forms`), and for no other:
registering one for an undeclared type fails at import."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

import lmtune.methods  # noqa: F401  (the strategies declare the forms the readers are registered for)
from lmtune.device import model_device
from lmtune.errors import LmtuneError
from lmtune.forms import Form, declared_peft_types, peft_form
from lmtune.registry import Registry
from lmtune.serve.forms import BodyPart


class KindReader(ABC):
    """Turns one saved PEFT adapter (its config dict and tensors) into a `BodyPart` for `model`."""

    name: ClassVar[str]
    """The PEFT type, as in adapter_config.json's `peft_type`."""

    @property
    def form(self) -> Form:
        return peft_form(self.name)

    @abstractmethod
    def read(self, config: dict[str, Any], tensors: dict[str, torch.Tensor], model: nn.Module) -> BodyPart:
        """Raise LmtuneError when the adapter does not fit `model` (another base model)."""


READERS: Registry[KindReader] = Registry("adapter type", "adapter types")
"""PEFT type → its reader; `READERS.names()` are the types the server applies per row."""


def register_kind(cls: type[KindReader]) -> type[KindReader]:
    """Class decorator: register a reader, only for a PEFT type a strategy declares a servable form for."""
    form = declared_peft_types().get(cls.name)
    if form is None or not form.shares_base:
        raise ValueError(f"a serve reader for PEFT type {cls.name!r}, which no strategy declares a servable form for "
                         "(lmtune.forms.declare_peft_form)")
    return READERS.register(cls)


def serve_kind_of(peft_type: str) -> str:
    """The form's name, for listings that tell it before loading."""
    return peft_form(peft_type).name if peft_type in READERS else "not servable"


def read_body_part(config: dict[str, Any], tensors: dict[str, torch.Tensor], model: nn.Module) -> BodyPart:
    peft_type = str(config.get("peft_type", ""))
    if peft_type not in READERS:
        raise LmtuneError(
            f"adapters of PEFT type {peft_type!r} cannot be served yet; the server applies "
            f"{', '.join(READERS.names())} per row (serve the merged model as its own base instead)"
        )
    device = model_device(model)  # adapters live beside the base model's weights
    return READERS.build(peft_type).read(config, {k: v.to(device) for k, v in tensors.items()}, model)


def module_path(saved_name: str, model: nn.Module) -> str:
    """The served model's name for a module PEFT saved as `base_model.model.<path>`. Classification runs wrap
    the body (`layers.0…`), generative runs the LM (`model.layers.0…`); the server holds the LM, so both fit."""
    path = saved_name.removeprefix("base_model.model.")
    modules = dict(model.named_modules())
    if path in modules:
        return path
    prefixed = f"{model.base_model_prefix}.{path}" if getattr(model, "base_model_prefix", "") else path
    if prefixed in modules:
        return prefixed
    raise LmtuneError(
        f"the adapter changes module {path!r}, which the served base model does not have: "
        "it was trained for another base model"
    )


def check_shape(what: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise LmtuneError(
            f"{what} has shape {tuple(tensor.shape)}, the served base model needs {tuple(expected)}: "
            "the adapter was trained for another base model"
        )


def in_out_features(module: nn.Module) -> tuple[int, int]:
    from peft.tuners.tuners_utils import _get_in_out_features

    return _get_in_out_features(module)
