"""Choosing each row's next token: greedy, or temperature + nucleus (top-p) sampling with a per-request seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmtune.errors import LmtuneError


@dataclass
class SamplingParams:
    max_tokens: int = 128
    """New tokens at most."""
    temperature: float = 0.0
    """0 is greedy; higher is more random."""
    top_p: float = 1.0
    """Sample from the smallest set of tokens whose probability reaches top_p."""
    seed: int | None = None
    """Makes sampling repeatable for this request, whatever else shares its batch."""
    stop: list[str] = field(default_factory=list)
    """Generation ends before the first of these strings (not included in the text)."""
    ignore_eos: bool = False
    """Go on past the end-of-sequence token up to max_tokens (benchmarks, as vLLM's option)."""

    def check(self, limit: int) -> None:
        if not 1 <= self.max_tokens <= limit:
            raise LmtuneError(f"max_tokens must be between 1 and {limit}, not {self.max_tokens}")
        if not 0.0 <= self.temperature <= 10.0:
            raise LmtuneError(f"temperature must be between 0 and 10, not {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise LmtuneError(f"top_p must be in (0, 1], not {self.top_p}")
        if len(self.stop) > 8 or any(not isinstance(s, str) or not s for s in self.stop):
            raise LmtuneError("stop takes at most 8 non-empty strings")

    def generator(self) -> torch.Generator | None:
        if self.temperature == 0:
            return None
        generator = torch.Generator()
        if self.seed is not None:
            generator.manual_seed(self.seed)
        else:
            generator.seed()
        return generator


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One row's next token from its last-position logits [vocab]. Rows are sampled one by one so that a
    request's seed gives the same text whichever rows share its batch."""
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < params.top_p  # the first token always stays
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
