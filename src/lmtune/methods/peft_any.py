"""Any other PEFT method by its PEFT config (IA3, LoHa, LoKr, VeRA, AdaLoRA, OFT, BOFT, FourierFT, ...)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from peft import PeftConfig
from peft.utils import PeftType
from pydantic import field_validator, model_validator

from lmtune.config.schema import MethodConfig
from lmtune.errors import did_you_mean, hint
from lmtune.forms import WEIGHT_DELTA, declare_peft_form, peft_form
from lmtune.methods._peft import PeftStrategy
from lmtune.methods.base import register_strategy

# IA3 scales activations per channel: on a module's output (keys, values) that is out·(l - 1) added to the output,
# on a feed-forward module's input W·((l - 1)·x) added to it, both additions to module outputs (serve/kinds/ia3.py).
declare_peft_form("IA3", WEIGHT_DELTA)


def _peft_config_class(peft_type: str) -> type[PeftConfig]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(peft_type)]


class AnyPeftConfig(MethodConfig):
    name: Literal["peft"] = "peft"
    """Any PEFT method by its PEFT type and config options."""
    peft_type: str = "IA3"
    """PEFT's method name: IA3, LOHA, LOKR, VERA, ADALORA, OFT, BOFT, FOURIERFT, LN_TUNING, ..."""
    options: dict[str, Any] = {}
    """Keyword arguments for that PEFT config class (e.g. {target_modules: [query, value], r: 8}); `task_type`
    is set by lmtune."""
    default_learning_rate: float = 1e-3
    """Learning rate used when train.learning_rate is not given."""

    @field_validator("peft_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        value = value.upper()
        known = [t.value for t in PeftType]
        if value not in known:
            suggestion = did_you_mean(value, known)
            raise ValueError(f"unknown PEFT type {value!r}; {suggestion + ' ' if suggestion else ''}known: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _known_options(self):
        fields = {f.name for f in dataclasses.fields(_peft_config_class(self.peft_type))}
        for key in self.options:
            if key not in fields or key == "task_type":
                raise ValueError(f"{self.peft_type} has no option {key!r}{hint(key, sorted(fields))}")
        return self


@register_strategy
class AnyPeft(PeftStrategy):
    name = "peft"
    config_cls = AnyPeftConfig
    summary = "any PEFT method, configured with PEFT's own options"

    @property
    def default_learning_rate(self) -> float:  # type: ignore[override]
        return self.cfg.default_learning_rate

    @property
    def peft_type(self) -> str:  # type: ignore[override]
        return self.cfg.peft_type

    @property
    def form(self):  # type: ignore[override]
        """The declared form of its PEFT type (lora, prompt tuning, ... by their own strategies; IA3 below), else
        honestly not servable: no reader applies it per row."""
        return peft_form(self.cfg.peft_type, _peft_config_class(self.cfg.peft_type)().is_prompt_learning)

    def peft_config(self, model) -> PeftConfig:
        config_cls = _peft_config_class(self.cfg.peft_type)
        return config_cls(task_type=model.peft_task_type, **self.cfg.options)
