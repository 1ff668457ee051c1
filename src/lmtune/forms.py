"""The forms a trained adapter takes, declared once, and the code that places a soft prompt before a row's text.

A form says *where* an adapter changes the computation, which decides how evaluation decodes with it and how the
server applies it per row:

- `weight_delta`: an addition to some modules' outputs (LoRA, bottleneck adapters, IA3's scaling);
- `virtual_tokens`: embeddings before the text (prompt tuning; p-tuning once its encoder's output is taken);
- `kv_prefix`: keys and values before the text in every attention layer (prefix tuning);
- `head`: a task head on the shared, unchanged body;
- `full_model`: the base model's own weights changed (served as its own base).

Strategies (`methods/`) say which form they produce; PEFT-backed ones also declare it for their PEFT type, so an
adapter seen only through its PEFT config (evaluation, a PEFT folder made by another tool) gets the same form.
The server's readers (`serve/kinds/`) exist exactly for the declared servable PEFT types. Shared code asks the
form, never a strategy or PEFT type name. This module imports nothing of lmtune: everything else may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Decode = Literal["cached", "after_soft_prompt", "full_forward"]


@dataclass(frozen=True)
class Form:
    name: str
    """The word metrics.json (`serve_kind`), listings and the server use."""
    decode: Decode
    """How generation runs with it. `cached`: transformers' `generate` (KV cache, beams) is exact because the
    adapter lives inside the modules or the weights. `after_soft_prompt`: PEFT's `generate` places virtual tokens
    before the padding, so they are placed here (`place_rows`) and `generate` runs on the embeddings.
    `full_forward`: PEFT's cached path for key/value prefixes disagrees with its own forward pass from the first
    token (transformers 5.24, peft 0.21.2), so each new token takes a full forward, as training computes it."""
    shares_base: bool
    """Applied per row on the one shared base model (the server can batch it with other adapters)."""


WEIGHT_DELTA = Form("weight_delta", "cached", True)
VIRTUAL_TOKENS = Form("virtual_tokens", "after_soft_prompt", True)
KV_PREFIX = Form("kv_prefix", "full_forward", True)
HEAD = Form("head", "cached", True)
FULL_MODEL = Form("full_model", "cached", False)
# PEFT methods no serving reader applies (LoHa, VeRA, ...): their runs say so, and the server refuses them. Those
# that change modules decode with the cache; unknown prompt-learning methods take the full forward, the reference.
NOT_SERVABLE_MODULES = Form("not servable", "cached", False)
NOT_SERVABLE_PROMPT = Form("not servable", "full_forward", False)

FORMS = (WEIGHT_DELTA, VIRTUAL_TOKENS, KV_PREFIX, HEAD, FULL_MODEL, NOT_SERVABLE_MODULES)

_PEFT_FORMS: dict[str, Form] = {}


def declare_peft_form(peft_type: str, form: Form) -> None:
    """The one declaration of what adapters of `peft_type` are (called where the strategy that trains them is)."""
    if _PEFT_FORMS.setdefault(peft_type, form) is not form:
        raise ValueError(f"PEFT type {peft_type!r} is declared as {_PEFT_FORMS[peft_type].name} and {form.name}")


def declared_peft_types() -> dict[str, Form]:
    return dict(_PEFT_FORMS)


def peft_form(peft_type: str, prompt_learning: bool = False) -> Form:
    """The declared form of `peft_type`, or the not-servable form its kind of PEFT method decodes with."""
    undeclared = NOT_SERVABLE_PROMPT if prompt_learning else NOT_SERVABLE_MODULES
    return _PEFT_FORMS.get(peft_type, undeclared)


def form_named(name: str) -> Form:
    """The form metrics.json names (`serve_kind`); a name lmtune does not know is not servable."""
    return next((form for form in FORMS if form.name == name), NOT_SERVABLE_MODULES)


def form_of_body(body) -> Form:
    """A trained body's form from the adapter's own PEFT config, the truth about the weights it holds. A body
    without one has its own weights changed, or none (a head): `generate` decodes both exactly."""
    config = getattr(body, "active_peft_config", None)
    if config is None:
        return FULL_MODEL
    return peft_form(str(config.peft_type.value), bool(getattr(config, "is_prompt_learning", False)))


# ---- soft prompts before the text: one placement for evaluation and serving ---------------------------------


@dataclass
class RowLayout:
    """Where each row's soft prompt and text sit in a padded batch of width `width`.

    Decoders pad on the left ([padding][soft prompt][text]), so every row's next token comes from the last
    position and the virtual tokens keep positions 0..v-1 right before the text, as PEFT trains them (its own
    `generate` puts them before the padding instead). Encoders pad on the right ([soft prompt][text][padding])."""

    width: int
    starts: list[int]
    """The first position of each row's soft prompt (or text, where it has none)."""
    text_starts: list[int]
    lengths: list[int]
    """Soft prompt plus text, per row."""


def lay_out_rows(text_lengths: Sequence[int], virtual_lengths: Sequence[int], left_pad: bool) -> RowLayout:
    lengths = [t + v for t, v in zip(text_lengths, virtual_lengths)]
    width = max(lengths)
    starts = [width - n if left_pad else 0 for n in lengths]
    return RowLayout(width, starts, [s + v for s, v in zip(starts, virtual_lengths)], lengths)


def place_rows(embed: torch.nn.Module, token_rows: Sequence[Sequence[int]],
               soft_prompts: Sequence[torch.Tensor | None], left_pad: bool, pad_id: int):
    """(inputs_embeds [rows, width, hidden], attention_mask [rows, width], layout): each row's text embedded and its
    soft prompt ([virtual, hidden] or None) placed right before it."""
    device = embed.weight.device
    virtual = [s.size(0) if s is not None else 0 for s in soft_prompts]
    layout = lay_out_rows([len(t) for t in token_rows], virtual, left_pad)
    ids = torch.full((len(token_rows), layout.width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(token_rows), layout.width, dtype=torch.long, device=device)
    for row, tokens in enumerate(token_rows):
        start = layout.text_starts[row]
        ids[row, start : start + len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
        mask[row, layout.starts[row] : layout.starts[row] + layout.lengths[row]] = 1
    embeds = embed(ids)
    for row, soft in enumerate(soft_prompts):
        if soft is not None:
            embeds[row, layout.starts[row] : layout.text_starts[row]] = soft.to(embeds.dtype)
    return embeds, mask, layout
