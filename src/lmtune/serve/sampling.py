"""Choosing each row's next token: the request's logit processors (logit bias, min_tokens, repetition, frequency and
presence penalties), then greedy or temperature + nucleus (top-p) sampling with a per-request seed; and the
log-probabilities a request asks for, read from the model's own distribution (before any processing, as OpenAI and
vLLM report them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lmtune.errors import LmtuneError

MAX_SEED = 2**63 - 1
"""torch.Generator.manual_seed takes 64 bits; one range for every client."""
GREEDY_BELOW = 1e-5
MAX_LOGIT_BIAS = 300
"""Tokens one request may bias (OpenAI's limit)."""


@dataclass
class SamplingParams:
    max_tokens: int = 128
    """New tokens at most (0 only with `echo`: the prompt is scored, nothing is generated)."""
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
    n: int = 1
    """Rows generated from the prompt (OpenAI's `best_of`, or `n`): they share one prefill."""
    logprobs: int | None = None
    """Report each generated token's log-probability and this many most likely alternatives (None: none)."""
    echo: bool = False
    """Score the prompt too: with `logprobs`, each prompt token's log-probability (the first has none)."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token generated at least once (OpenAI's, -2..2)."""
    frequency_penalty: float = 0.0
    """Subtracted from a token's logit once per time it was generated (OpenAI's, -2..2)."""
    repetition_penalty: float = 1.0
    """vLLM's (CTRL's): logits of tokens in the prompt or the generation are divided by it when positive, multiplied
    when negative; 1 changes nothing."""
    logit_bias: dict[int, float] = field(default_factory=dict)
    """Added to these tokens' logits (-100..100; -100 bans a token, 100 all but forces it)."""
    min_tokens: int = 0
    """No end of sequence and no stop string before this many tokens."""
    response_format: tuple[str, dict | None] | None = None
    """("json_object", None) or ("json_schema", schema): the text is constrained to JSON (serve/structured.py)."""

    def check(self, limit: int, vocab_size: int | None = None, max_logprobs: int = 20) -> None:
        """Refuse what would fail inside a batch; `not a <= x <= b` also refuses NaN."""
        if not isinstance(self.max_tokens, int) or not (0 if self.echo else 1) <= self.max_tokens <= limit:
            low = "0 (with echo)" if self.echo else "1"
            raise LmtuneError(f"max_tokens must be between {low} and {limit}, not {self.max_tokens}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature <= 10.0:
            raise LmtuneError(f"temperature must be between 0 and 10, not {self.temperature}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise LmtuneError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED):
            raise LmtuneError(f"seed must be an integer between 0 and {MAX_SEED} (2**63 - 1), not {self.seed}")
        if len(self.stop) > 8 or any(not isinstance(s, str) or not s for s in self.stop):
            raise LmtuneError("stop takes at most 8 non-empty strings")
        if self.logprobs is not None and not 0 <= self.logprobs <= max_logprobs:
            raise LmtuneError(f"logprobs (top_logprobs) must be between 0 and {max_logprobs}, not {self.logprobs}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise LmtuneError(f"{name} must be between -2 and 2, not {getattr(self, name)}")
        if not 0.0 < self.repetition_penalty <= 10.0:
            raise LmtuneError(f"repetition_penalty must be in (0, 10], not {self.repetition_penalty}")
        if not 0 <= self.min_tokens <= max(self.max_tokens, 0):
            raise LmtuneError(f"min_tokens must be between 0 and max_tokens ({self.max_tokens}), not {self.min_tokens}")
        if self.ignore_eos and self.response_format is not None:
            raise LmtuneError("ignore_eos cannot go with JSON output: the grammar ends with the end of sequence")
        self._check_bias(vocab_size)

    def _check_bias(self, vocab_size: int | None) -> None:
        if len(self.logit_bias) > MAX_LOGIT_BIAS:
            raise LmtuneError(f"logit_bias names {len(self.logit_bias)} tokens; at most {MAX_LOGIT_BIAS}")
        for token, bias in self.logit_bias.items():
            if vocab_size is not None and not 0 <= token < vocab_size:
                raise LmtuneError(f"logit_bias: token id {token} is outside the vocabulary (0 to {vocab_size - 1})")
            if not -100.0 <= bias <= 100.0:
                raise LmtuneError(f"logit_bias: the bias of token {token} must be between -100 and 100, not {bias}")

    @property
    def greedy(self) -> bool:
        """Temperatures this close to 0 are greedy decoding, as in vLLM: dividing logits by 5e-324 overflows."""
        return self.temperature < GREEDY_BELOW

    @property
    def processes_logits(self) -> bool:
        return bool(self.logit_bias or self.min_tokens or self.presence_penalty or self.frequency_penalty
                    or self.repetition_penalty != 1.0)

    def generator(self, index: int = 0) -> torch.Generator | None:
        """Row `index` of the request samples with seed + index, so n choices differ and each is repeatable."""
        if self.greedy:
            return None
        generator = torch.Generator()
        if self.seed is not None:
            generator.manual_seed((self.seed + index) % (MAX_SEED + 1))
        else:
            generator.seed()
        return generator


def process_logits(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int],
                   generated: Sequence[int], end_ids: Sequence[int]) -> torch.Tensor:
    """One row's logits [vocab] after the request's processors, in vLLM's order: min_tokens, logit bias, then the
    repetition, frequency and presence penalties. The input is not changed."""
    if not params.processes_logits:
        return logits
    logits = logits.float().clone()
    if len(generated) < params.min_tokens and end_ids:
        logits[torch.tensor(list(end_ids), device=logits.device)] = float("-inf")
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), device=logits.device)
        logits[ids] += torch.tensor(list(params.logit_bias.values()), device=logits.device)
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted({*prompt_ids, *generated}), dtype=torch.long, device=logits.device)
        chosen = logits[seen]
        logits[seen] = torch.where(chosen > 0, chosen / params.repetition_penalty, chosen * params.repetition_penalty)
    if generated and (params.frequency_penalty or params.presence_penalty):
        counts = torch.bincount(torch.tensor(list(generated), device=logits.device), minlength=logits.numel())
        logits -= params.frequency_penalty * counts[: logits.numel()] + params.presence_penalty * (counts > 0)
    return logits


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One row's next token from its last-position logits [vocab] (processed already). Rows are sampled one by one
    so that a request's seed gives the same text whichever rows share its batch."""
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


@dataclass
class TokenLogprob:
    """One token's log-probability under the model, and the most likely tokens at its position."""

    token: int
    logprob: float | None
    """None for a prompt's first token (nothing before it to predict it from)."""
    top: list[tuple[int, float]]


def token_logprobs(logits: torch.Tensor, tokens: Sequence[int], top: int) -> list[TokenLogprob]:
    """For logits [positions, vocab] and the token chosen at each position: its log-probability and the `top` most
    likely (token, log-probability) pairs, from the model's raw distribution."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(list(tokens), device=logits.device)[:, None])[:, 0].tolist()
    if top > 0:
        values, ids = logprobs.topk(top, dim=-1)
        pairs = [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
    else:
        pairs = [[] for _ in tokens]
    return [TokenLogprob(t, lp, p) for t, lp, p in zip(tokens, chosen, pairs)]
