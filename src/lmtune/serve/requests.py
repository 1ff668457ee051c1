"""What travels through the engine: a generating sequence, a classification job, and the events they emit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmtune.serve.forms import ServedAdapter
from lmtune.serve.sampling import SamplingParams


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


@dataclass
class Sequence_:
    id: str
    prompt_ids: list[int]
    adapter: ServedAdapter | None
    params: SamplingParams
    on_event: Callable[[GenerationEvent], None]
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    sent: str = ""
    finished: bool = False

    def accept(self, token: int, tokenizer, end_ids: list[int]) -> None:
        """Record a sampled token and announce the text it completes."""
        if token in end_ids and not self.params.ignore_eos:
            return self._emit(self._text(tokenizer), "stop")
        self.generated.append(token)
        text = self._text(tokenizer)
        cut = [text.find(s) for s in self.params.stop if s in text]
        if cut:
            return self._emit(text[: min(cut)], "stop")
        if len(self.generated) >= self.params.max_tokens:
            return self._emit(text, "length")
        # Hold back what could still become a stop string, and half a multi-byte character.
        hold = max((len(s) - 1 for s in self.params.stop), default=0)
        ready = text[: len(text) - hold] if hold else text
        if ready.endswith("\ufffd"):
            ready = ready[:-1]
        self._emit(ready, None)

    def _text(self, tokenizer) -> str:
        return tokenizer.decode(self.generated, skip_special_tokens=True)

    def _emit(self, text: str, finish_reason: str | None, error: str | None = None) -> None:
        self.finished = finish_reason is not None
        delta = text[len(self.sent) :] if text.startswith(self.sent) else ""
        self.sent = text if text.startswith(self.sent) else self.sent
        self.on_event(GenerationEvent(self.id, delta, self.finished, finish_reason, len(self.prompt_ids),
                                      len(self.generated), error))

    def finish(self, reason: str) -> None:
        self._emit(self.sent, reason)

    def fail(self, message: str) -> None:
        self._emit(self.sent, "error", message)


@dataclass
class ClassifyJob:
    """Texts tokenised when the request arrived (never on the engine thread); classified a batch at a time."""

    id: str
    rows: list[list[int]]
    adapter: ServedAdapter
    on_done: Callable[[list[dict] | Exception], None]
    results: list[dict] = field(default_factory=list)
    failed: bool = False

    def take(self, count: int) -> list[list[int]]:
        """The next `count` rows not yet classified."""
        start = len(self.results)
        return self.rows[start : start + count]

    @property
    def remaining(self) -> int:
        return 0 if self.failed else len(self.rows) - len(self.results)
