"""What every PEFT-backed strategy shares: wrap the body with PEFT, save and load in PEFT's own format."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from lmtune.errors import LmtuneError
from lmtune.forms import Form, declare_peft_form
from lmtune.io import save_pretrained_atomically
from lmtune.methods._weights import freeze, load_into, save_tensors
from lmtune.methods.base import Strategy

# PEFT's prompt-learning models drop token_type_ids (and say so on every forward). Only text pairs on BERT-style
# models have non-zero ones; that limitation is documented in docs/architecture.md, the per-batch warning is noise.
warnings.filterwarnings("ignore", message="Token type ids are not supported for parameter efficient tuning")

ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT saves a prompt encoder's *output* only (shared/NOTES.md); strategies whose training state is more than
# that also write this file, so `train.init_from` can keep training them.
TRAINING_STATE = "training_state.safetensors"


class PeftStrategy(Strategy):
    peft_type: ClassVar[str]
    """PEFT's name for the method (adapter_config.json's `peft_type`)."""
    #: True where PEFT's saved adapter cannot restart training (p-tuning's encoder, prefix projection).
    keeps_training_state: bool = False

    def __init_subclass__(cls, **kwargs):
        """A strategy that names its PEFT type and form declares that form for the type (`lmtune.forms`): the
        adapters it trains, and PEFT folders of that type made elsewhere, are then evaluated and served alike."""
        super().__init_subclass__(**kwargs)
        peft_type, form = cls.__dict__.get("peft_type"), cls.__dict__.get("form")
        if isinstance(peft_type, str) and isinstance(form, Form):
            declare_peft_form(peft_type, form)

    @abstractmethod
    def peft_config(self, model) -> PeftConfig:
        """The PEFT config for this model (task type FEATURE_EXTRACTION: the head is the task's, not PEFT's)."""

    def after_wrap(self, model) -> None:
        """Hook for initialisation PEFT lacks (p-tuning from text)."""

    def apply(self, model):
        freeze(model.body)
        try:
            model.body = get_peft_model(model.body, self.peft_config(model))
        except (TypeError, ValueError) as err:
            raise LmtuneError(
                f"PEFT cannot apply {self.name} to this {model.backbone.model_type} model: {err}. "
                "Choose other target modules (method options) or another method."
            ) from None
        self.after_wrap(model)
        return model

    def save(self, model, directory: Path) -> list[Path]:
        written = save_pretrained_atomically(directory, model.body)
        for card in [p for p in written if p.name == "README.md"]:  # PEFT's boilerplate model card, not the adapter
            card.unlink()
            written.remove(card)
        if self.keeps_training_state:
            state = {n: p for n, p in model.body.named_parameters() if p.requires_grad}
            written.append(save_tensors(state, directory / TRAINING_STATE))
        return written

    def load(self, model, directory: Path, trainable: bool = False):
        if not trainable:
            model.body = PeftModel.from_pretrained(model.body, directory)
            freeze(model.body)
            return model
        # PEFT refuses `is_trainable=True` for prompt-learning adapters: rebuild the adapter, then fill it.
        self.apply(model)
        if (directory / TRAINING_STATE).is_file():
            load_into(model.body, directory / TRAINING_STATE)
        else:
            set_peft_model_state_dict(model.body, load_file(str(directory / ADAPTER_WEIGHTS)))
        return model

    def export(self, model) -> dict[str, torch.Tensor]:
        return get_peft_model_state_dict(model.body)
