"""Prompt tuning and p-tuning: a soft prompt (virtual-token embeddings) before each row's text. PEFT saves
p-tuning's prompt-encoder *output*, so both are the same thing once trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmtune.errors import LmtuneError
from lmtune.serve.forms import BodyPart
from lmtune.serve.kinds.base import KindReader, check_shape, register_kind


@dataclass
class SoftPromptPart(BodyPart):
    embeddings: torch.Tensor  # [virtual, hidden]

    def tensors(self) -> list[torch.Tensor]:
        return [self.embeddings]

    def soft_prompt(self) -> torch.Tensor:
        return self.embeddings


class SoftPromptReader(KindReader):

    def read(self, config: dict[str, Any], tensors: dict[str, torch.Tensor], model) -> SoftPromptPart:
        if (config.get("num_transformer_submodules") or 1) != 1:
            raise LmtuneError("soft prompts of encoder-decoder models cannot be served (decoder-only and encoders only)")
        embeddings = tensors.get("prompt_embeddings")
        if embeddings is None:
            raise LmtuneError(f"a {self.name} adapter must hold `prompt_embeddings`; found {sorted(tensors)}")
        hidden = model.get_input_embeddings().weight.size(1)
        check_shape("the soft prompt", embeddings, (config["num_virtual_tokens"], hidden))
        return SoftPromptPart(embeddings.to(model.get_input_embeddings().weight.dtype))


@register_kind
class PromptTuningReader(SoftPromptReader):
    name = "PROMPT_TUNING"


@register_kind
class PTuningReader(SoftPromptReader):
    name = "P_TUNING"
