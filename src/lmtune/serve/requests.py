"""What travels through the engine: a generating sequence, a classification job, and the events they emit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmtune.serve.detokenize import IncrementalDecoder
from lmtune.serve.forms import ServedAdapter
from lmtune.serve.sampling import SamplingParams, TokenLogprob


@dataclass
class GenerationEvent:
    """One per decode step per request; the last has `finished=True`."""

    request_id: str
    text: str
    """The new text since the previous event (may be empty while a stop string could still be forming)."""
    finished: bool
    finish_reason: str | None
    """stop | length | error | cancelled"""
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    index: int = 0
    """Which of the request's rows (choices) this event is about."""
    logprobs: list[TokenLogprob] | None = None
    """With `logprobs`: the tokens generated since the previous event of this row."""
    prompt_logprobs: list[TokenLogprob] | None = None
    """With `echo` and `logprobs`, on a row's first event: each prompt token's (the first without a log-probability)."""
    cumulative_logprob: float = 0.0
    """The sum of the generated tokens' log-probabilities so far (computed when logprobs or best_of ask)."""


@dataclass
class Sequence_:
    id: str
    prompt_ids: list[int]
    adapter: ServedAdapter | None
    params: SamplingParams
    on_event: Callable[[GenerationEvent], None]
    generator: torch.Generator | None
    index: int = 0
    """The row's place among its request's rows (n, best_of): they share the request's id and one prefill."""
    generated: list[int] = field(default_factory=list)
    finished: bool = False
    prompt_logprobs: list[TokenLogprob] | None = None
    """Set by the prefill when the request echoes the prompt with logprobs; sent with the first event."""
    cumulative_logprob: float = 0.0
    grammar: object | None = None
    """With a JSON response_format: the row's place in its grammar (serve/structured.py: RowGrammar)."""
    _new_logprobs: list[TokenLogprob] | None = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)
    _decoder: IncrementalDecoder | None = field(default=None, repr=False)
    _held: str = field(default="", repr=False)
    """Decoded text not sent yet: what could still begin a stop string (at most its length - 1 between steps)."""

    def accept(self, token: int, tokenizer, end_ids: list[int], logprob: TokenLogprob | None = None) -> None:
        """Record a sampled token (with its log-probability when asked) and announce the text it completes. Costs
        the same at every step: only the new tokens are decoded (serve/detokenize.py) and only the unsent text is
        searched for stop strings (a stop string in text already sent would have ended the generation then)."""
        if self._decoder is None:
            self._decoder = IncrementalDecoder(tokenizer)
        self.generated.append(token)  # the end token too: it counts, and has its logprob, as in vLLM
        if logprob is not None:
            self.cumulative_logprob += logprob.logprob
            if self.params.logprobs is not None:
                self._new_logprobs = [*(self._new_logprobs or []), logprob]
        if token in end_ids and not self.params.ignore_eos:
            return self._emit(self._held + self._decoder.pending, "stop")
        self._held += self._decoder.add(token)
        unsent = self._held + self._decoder.pending  # pending may end in half a character: never sent mid-stream
        early = len(self.generated) < self.params.min_tokens  # min_tokens: no stop string yet (as vLLM)
        cut = [] if early else [unsent.find(s) for s in self.params.stop if s in unsent]
        if cut:
            return self._emit(unsent[: min(cut)], "stop")
        if len(self.generated) >= self.params.max_tokens:
            return self._emit(unsent, "length")
        hold = max((len(s) - 1 for s in self.params.stop), default=0)  # could still become a stop string
        ready = max(0, len(self._held) - hold)
        text, self._held = self._held[:ready], self._held[ready:]
        self._emit(text, None)

    def _emit(self, text: str, finish_reason: str | None, error: str | None = None) -> None:
        """Announce `text` (new since the last event)."""
        self.finished = finish_reason is not None
        prompt_logprobs = None if self._started else self.prompt_logprobs
        logprobs, self._new_logprobs, self._started = self._new_logprobs, None, True
        if self.params.logprobs is not None and logprobs is None:
            logprobs = []
        self.on_event(GenerationEvent(self.id, text, self.finished, finish_reason, len(self.prompt_ids),
                                      len(self.generated), error, self.index, logprobs, prompt_logprobs,
                                      self.cumulative_logprob))

    def finish(self, reason: str) -> None:
        self._emit("", reason)

    def fail(self, message: str) -> None:
        self._emit("", "error", message)


@dataclass
class ClassifyJob:
    """Texts tokenised when the request arrived (never on the engine thread); classified (or embedded) a batch at a
    time."""

    id: str
    rows: list[list[int]]
    adapter: ServedAdapter
    on_done: Callable[[list | Exception], None]
    results: list = field(default_factory=list)
    failed: bool = False
    embed: bool = False
    """An embedding job: each row's pooled vector instead of its head's label."""

    def take(self, count: int) -> list[list[int]]:
        """The next `count` rows not yet classified."""
        start = len(self.results)
        return self.rows[start : start + count]

    @property
    def remaining(self) -> int:
        return 0 if self.failed else len(self.rows) - len(self.results)
