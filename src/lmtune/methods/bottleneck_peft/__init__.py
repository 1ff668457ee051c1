"""Bottleneck adapters (series and parallel, as in the LLM-Adapters paper) as a real PEFT tuner.

Why we write this ourselves: PEFT has no bottleneck adapters (huggingface/peft#244), and AdapterHub's `adapters`
package pins transformers 4.57 while lmtune runs on 5.x. Registered into PEFT, they save and load in PEFT's own
format (`adapter_config.json` + `adapter_model.safetensors`; `PeftModel.from_pretrained` loads them once this
package is imported), several can live on one model, and PEFT's `adapter_names=[...]` routes rows at inference.
"""

from __future__ import annotations

from peft.utils import PeftType, register_peft_method

from lmtune.methods.bottleneck_peft.config import BottleneckConfig, placement_targets
from lmtune.methods.bottleneck_peft.layer import BottleneckLayer, bottleneck_parameter_count
from lmtune.methods.bottleneck_peft.model import BottleneckModel

PEFT_NAME = "bottleneck"


def add_peft_type(name: str) -> PeftType:
    """Add a member to PEFT's `PeftType` enum (a `str` Enum), once; `register_peft_method` insists it exists.

    Enums cannot be extended by subclassing, so this does what `enum` does for each member while it builds the
    class (`enum._proto_member.__set_name__`): make the member, then record it where lookups look — the class
    attribute (`PeftType.X`), `_member_map_` (`PeftType["X"]`), `_value2member_map_` (`PeftType("X")`, what
    loading `"peft_type": "X"` from JSON uses) and `_member_names_` (iteration, `"X" in list(PeftType)`).
    """
    if name in PeftType._member_map_:  # idempotent: a second import or a reload finds it there
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    setattr(PeftType, name, member)  # before _member_map_: EnumType.__setattr__ refuses to rebind known members
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member


def register() -> None:
    """Register the tuner with PEFT, once (PEFT raises on a second registration of the same name)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    peft_type = add_peft_type(PEFT_NAME.upper())
    if peft_type not in PEFT_TYPE_TO_TUNER_MAPPING:
        register_peft_method(name=PEFT_NAME, config_cls=BottleneckConfig, model_cls=BottleneckModel,
                             prefix=BottleneckModel.prefix)


register()

__all__ = ["BottleneckConfig", "BottleneckLayer", "BottleneckModel", "bottleneck_parameter_count", "placement_targets"]
