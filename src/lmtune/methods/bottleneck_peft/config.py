"""The PEFT config of bottleneck adapters, and where each placement puts them per architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig
from peft.utils import PeftType

KINDS = ("series", "parallel")
PLACEMENTS = ("attention", "mlp", "both")
NON_LINEARITIES = ("tanh", "relu", "gelu", "silu")

# Placement → module-name regex per architecture. PEFT full-matches a string `target_modules` against each
# module's whole name. Exact names, not suffixes: BERT's MLP output `layer.N.output.dense` has the same tail as
# its attention output `layer.N.attention.output.dense`, so suffix matching would put an MLP adapter on both.
# GPT-2's `c_proj` layers are transformers' Conv1D (weight stored as (in, out)); the layer reads sizes either way.
_BERT = {"attention": r"attention\.output\.dense", "mlp": r"layer\.\d+\.output\.dense"}
_LLAMA = {"attention": r"self_attn\.o_proj", "mlp": r"mlp\.down_proj"}
BOTTLENECK_PLACEMENTS: dict[str, dict[str, str]] = {
    "bert": _BERT,
    "roberta": _BERT,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gemma3_text": _LLAMA,
    "gpt2": {"attention": r"attn\.c_proj", "mlp": r"mlp\.c_proj"},
    # T5 (encoder and decoder stacks): attention outputs `SelfAttention.o`/`EncDecAttention.o`, MLP output `wo`
    "t5": {"attention": r".*Attention\.o", "mlp": r".*DenseReluDense\.wo"},
}


def placement_targets(model_type: str, placement: str) -> str:
    """The `target_modules` regex for a placement: the attention output, the MLP output, or both (Houlsby)."""
    if model_type not in BOTTLENECK_PLACEMENTS:
        raise ValueError(
            f"bottleneck adapters have no default placement for model type {model_type!r}; "
            "set target_modules to the module names to wrap"
        )
    names = BOTTLENECK_PLACEMENTS[model_type]
    chosen = ["attention", "mlp"] if placement == "both" else [placement]
    return r"(.*\.)?(" + "|".join(names[p] for p in chosen) + ")"


@dataclass
class BottleneckConfig(PeftConfig):
    """Bottleneck adapters on individual Linear/Conv1D modules (LLM-Adapters): `series` adds
    `scaling * up(act(down(y)))` to the module's output y; `parallel` adds `scaling * up(act(down(x)))`, read from
    the module's input x. The up-projection starts at zero, so a new adapter leaves the model unchanged."""

    kind: str = field(default="series", metadata={"help": "`series` (on the output) or `parallel` (beside, on the input)."})
    bottleneck_size: int = field(default=64, metadata={"help": "Width of the bottleneck."})
    non_linearity: str = field(default="tanh", metadata={"help": f"One of {', '.join(NON_LINEARITIES)}."})
    scaling: Union[float, str] = field(
        default=1.0, metadata={"help": "Factor on the adapter output, or `learned` (a trainable scalar starting at 1)."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter's input."})
    placement: str = field(
        default="mlp",
        metadata={"help": "Where the adapters go when target_modules is not given: `attention`, `mlp` or `both`."},
    )
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Module names (suffixes) or a regex; replaces the placement mapping."}
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Module names (suffixes) or a regex to leave alone."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Other modules to train and save in full (e.g. a new head)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.BOTTLENECK
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        self._check_choices()

    def _check_choices(self) -> None:
        for name, value, allowed in [("kind", self.kind, KINDS), ("placement", self.placement, PLACEMENTS),
                                     ("non_linearity", self.non_linearity, NON_LINEARITIES)]:
            if value not in allowed:
                raise ValueError(f"bottleneck {name} must be one of {', '.join(allowed)}, not {value!r}")
        if isinstance(self.scaling, str) and self.scaling != "learned":
            raise ValueError(f"bottleneck scaling must be a number or 'learned', not {self.scaling!r}")
        if self.bottleneck_size <= 0:
            raise ValueError(f"bottleneck_size must be positive, not {self.bottleneck_size}")

    @property
    def learned_scaling(self) -> bool:
        return self.scaling == "learned"
