"""Choosing each row's next token: greedy, or temperature + nucleus (top-p) sampling with a per-request seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmtune.errors import LmtuneError

MAX_SEED = 2**63 - 1
"""torch.Generator.manual_seed takes 64 bits; one range for every client."""
GREEDY_BELOW = 1e-5


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
        """Refuse what would fail inside a batch; `not a <= x <= b` also refuses NaN."""
        if not isinstance(self.max_tokens, int) or not 1 <= self.max_tokens <= limit:
            raise LmtuneError(f"max_tokens must be between 1 and {limit}, not {self.max_tokens}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature <= 10.0:
            raise LmtuneError(f"temperature must be between 0 and 10, not {self.temperature}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise LmtuneError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED):
            raise LmtuneError(f"seed must be an integer between 0 and {MAX_SEED} (2**63 - 1), not {self.seed}")
        if len(self.stop) > 8 or any(not isinstance(s, str) or not s for s in self.stop):
            raise LmtuneError("stop takes at most 8 non-empty strings")

    @property
    def greedy(self) -> bool:
        """Temperatures this close to 0 are greedy decoding, as in vLLM: dividing logits by 5e-324 overflows."""
        return self.temperature < GREEDY_BELOW

    def generator(self) -> torch.Generator | None:
        if self.greedy:
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
    if not bool(torch.isfinite(logits).any()) or bool(torch.isnan(logits).any()):
        raise LmtuneError("the model produced NaN or infinite logits for this request (are the adapter's weights broken?)")
    if params.greedy:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # A tiny top_p (1e-300) is 0 in float32: compare in float64 and keep the most likely token whatever happens.
        keep = (sorted_probs.cumsum(0) - sorted_probs).double() < params.top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
