"""The bodies of both completion routes, whole and streamed, built in one place.

`/v1/completions` and `/v1/chat/completions` differ only in how a choice holds its text (`text`; `message` whole,
`delta` streamed), in how its log-probabilities are shaped (the legacy `tokens/token_logprobs/top_logprobs/
text_offset` lists; chat's `content: [{token, logprob, bytes, top_logprobs}]`) and in their names; a `ChoiceStyle`
says that, and `CompletionResponse` builds every body from it. A new OpenAI field is added once, here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lmtune.serve.sampling import TokenLogprob

TokenText = Callable[[int], str]


@dataclass
class Choice:
    """One choice as it accumulates: its text, its tokens' log-probabilities (the prompt's first token, echoed, has
    none: logprob None), how it ended, and its score for best_of."""

    index: int
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    cumulative_logprob: float = 0.0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ChoiceStyle:
    route: str
    id_prefix: str
    object: str
    """The `object` of a whole response."""
    chunk_object: str
    """The `object` of a streamed chunk."""

    def whole(self, text: str) -> dict:
        """A whole choice's text field."""
        raise NotImplementedError

    def streamed(self, text: str, first: bool) -> dict:
        """A streamed choice's text field; `first`: the chunk that opens the stream."""
        raise NotImplementedError

    def logprobs(self, entries: Sequence[TokenLogprob], token_text: TokenText, offset: int) -> dict:
        """The choice's `logprobs` object for `entries`; `offset`: where their text starts in the choice's text."""
        raise NotImplementedError


class TextStyle(ChoiceStyle):
    def whole(self, text: str) -> dict:
        return {"text": text}

    def streamed(self, text: str, first: bool) -> dict:
        return {"text": text}

    def logprobs(self, entries, token_text, offset):
        """OpenAI's legacy shape: `top_logprobs` holds the alternatives and the chosen token (as vLLM does); a
        token without a log-probability (the prompt's first) has null in both."""
        tokens, scores, tops, offsets = [], [], [], []
        for entry in entries:
            tokens.append(token_text(entry.token))
            scores.append(entry.logprob)
            top = None
            if entry.logprob is not None:
                top = {token_text(t): lp for t, lp in entry.top}
                top.setdefault(tokens[-1], entry.logprob)
            tops.append(top)
            offsets.append(offset)
            offset += len(tokens[-1])
        return {"tokens": tokens, "token_logprobs": scores, "top_logprobs": tops, "text_offset": offsets}


class ChatStyle(ChoiceStyle):
    def whole(self, text: str) -> dict:
        return {"message": {"role": "assistant", "content": text}}

    def streamed(self, text: str, first: bool) -> dict:
        if first:
            return {"delta": {"role": "assistant", "content": ""}}
        return {"delta": {"content": text} if text else {}}

    def logprobs(self, entries, token_text, offset):
        def one(token: int, logprob: float) -> dict:
            text = token_text(token)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        return {"content": [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                            for e in entries if e.logprob is not None]}


TEXT = TextStyle("/v1/completions", "cmpl", "text_completion", "text_completion")
CHAT = ChatStyle("/v1/chat/completions", "chatcmpl", "chat.completion", "chat.completion.chunk")


@dataclass
class CompletionResponse:
    """One request's response: its id and time, and every body it sends."""

    style: ChoiceStyle
    model: str
    token_text: TokenText
    id: str = ""
    created: int = 0
    _offsets: dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        self.id, self.created = f"{self.style.id_prefix}-{uuid.uuid4().hex}", int(time.time())

    def whole(self, choices: list[Choice], usage_: dict) -> dict:
        return self._body(self.style.object, [self._choice(c.index, self.style.whole(c.text), c.finish_reason,
                                                           c.logprobs) for c in choices], usage_)

    def chunk(self, index: int, text: str, finish_reason: str | None, first: bool = False,
              logprobs: list[TokenLogprob] | None = None) -> dict:
        return self._body(self.style.chunk_object,
                          [self._choice(index, self.style.streamed(text, first), finish_reason, logprobs)])

    def usage_chunk(self, usage_: dict) -> dict:
        """The last chunk with `stream_options.include_usage`: no choices, the token counts."""
        return self._body(self.style.chunk_object, [], usage_)

    def _choice(self, index: int, text_field: dict, finish_reason: str | None,
                logprobs: list[TokenLogprob] | None) -> dict:
        shaped = None
        if logprobs is not None:
            offset = self._offsets.get(index, 0)
            shaped = self.style.logprobs(logprobs, self.token_text, offset)
            self._offsets[index] = offset + sum(len(self.token_text(e.token)) for e in logprobs)
        return {"index": index, **text_field, "logprobs": shaped, "finish_reason": finish_reason}

    def _body(self, object_: str, choices: list[dict], usage_: dict | None = None) -> dict:
        body = {"id": self.id, "object": object_, "created": self.created, "model": self.model, "choices": choices}
        if usage_ is not None:
            body["usage"] = usage_
        return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
