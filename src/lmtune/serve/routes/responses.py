"""The bodies of both completion routes, whole and streamed, built in one place.

`/v1/completions` and `/v1/chat/completions` differ only in how a choice holds its text (`text`; `message` whole,
`delta` streamed) and in their names; a `ChoiceStyle` says that, and `CompletionResponse` builds every body from
it. A new OpenAI field (logprobs, n choices, echo...) is added once, in `CompletionResponse._choice` or `_body`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from lmtune.serve.engine import GenerationEvent


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


class TextStyle(ChoiceStyle):
    def whole(self, text: str) -> dict:
        return {"text": text}

    def streamed(self, text: str, first: bool) -> dict:
        return {"text": text}


class ChatStyle(ChoiceStyle):
    def whole(self, text: str) -> dict:
        return {"message": {"role": "assistant", "content": text}}

    def streamed(self, text: str, first: bool) -> dict:
        if first:
            return {"delta": {"role": "assistant", "content": ""}}
        return {"delta": {"content": text} if text else {}}


TEXT = TextStyle("/v1/completions", "cmpl", "text_completion", "text_completion")
CHAT = ChatStyle("/v1/chat/completions", "chatcmpl", "chat.completion", "chat.completion.chunk")


def usage(event: GenerationEvent) -> dict:
    return {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
            "total_tokens": event.prompt_tokens + event.completion_tokens}


class CompletionResponse:
    """One request's response: its id and time, and every body it sends."""

    def __init__(self, style: ChoiceStyle, model: str):
        self.style, self.model = style, model
        self.id, self.created = f"{style.id_prefix}-{uuid.uuid4().hex}", int(time.time())

    def whole(self, text: str, last: GenerationEvent) -> dict:
        choice = self._choice(self.style.whole(text), last.finish_reason)
        return self._body(self.style.object, [choice], usage(last))

    def chunk(self, text: str, finish_reason: str | None, first: bool = False) -> dict:
        return self._body(self.style.chunk_object, [self._choice(self.style.streamed(text, first), finish_reason)])

    def usage_chunk(self, last: GenerationEvent) -> dict:
        """The last chunk with `stream_options.include_usage`: no choices, the token counts."""
        return self._body(self.style.chunk_object, [], usage(last))

    def _choice(self, text_field: dict, finish_reason: str | None) -> dict:
        return {"index": 0, **text_field, "logprobs": None, "finish_reason": finish_reason}

    def _body(self, object_: str, choices: list[dict], usage_: dict | None = None) -> dict:
        body = {"id": self.id, "object": object_, "created": self.created, "model": self.model, "choices": choices}
        if usage_ is not None:
            body["usage"] = usage_
        return body
