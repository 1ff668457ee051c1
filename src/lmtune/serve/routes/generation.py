"""One generation in flight, bridged from the engine's scheduler thread into asyncio.

The engine reports through callbacks on its own thread; `loop.call_soon_threadsafe` puts each event on the
request's queue. A client that hangs up, streaming or not, cancels its generation at the next step, so it frees
its batch slot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lmtune.errors import LmtuneError
from lmtune.serve.engine import (
    Engine,
    EngineDead,
    GenerationEvent,
    Overloaded,
    SamplingParams,
)
from lmtune.serve.metrics import ServeMetrics
from lmtune.serve.routes.deps import unknown_model
from lmtune.serve.routes.responses import Choice, CompletionResponse, usage
from lmtune.serve.schemas import ApiError


def bridge(loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]) -> Callable[[Any], None]:
    """A callback for the engine's thread that runs `deliver(value)` on `loop`."""
    def on_engine_thread(value) -> None:
        try:
            loop.call_soon_threadsafe(deliver, value)
        except RuntimeError:  # the loop is closed (server shutting down)
            pass
    return on_engine_thread


async def cancel_on_disconnect(request: Request, cancel: Callable[[], None]) -> None:
    """The body was read already, so the next message is the disconnect (uvicorn and Starlette's own
    StreamingResponse listen the same way): events arrive every step, so polling between them would never run."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel()


def failed(error: str) -> ApiError:
    return ApiError(500, f"generation failed: {error}", "server_error", "engine_error")


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


@dataclass
class Prompt:
    ids_or_text: str | list[int]
    echo: str
    """The text put before each choice's (echo), or ""."""


@dataclass
class Generation:
    """One request's generations: each prompt submitted with `params.n` rows; events of every row arrive on one
    queue as (prompt index, event). Choice `p * n + j` is prompt p's j-th returned row (rows = n but with best_of,
    whose rows are numbered `p * rows + row` until `best` keeps n of them)."""

    engine: Engine
    metrics: ServeMetrics
    request: Request
    route: str
    request_ids: list[str]
    events: asyncio.Queue
    prompts: list[Prompt]
    rows: int
    """Rows per prompt (best_of, or n)."""
    n: int
    """Choices returned per prompt."""
    started: float = field(default_factory=time.perf_counter)
    first_seen: bool = False
    error: str | None = None

    @classmethod
    async def submit(cls, engine: Engine, metrics: ServeMetrics, request: Request, route: str, started: float,
                     prompts: list[Prompt], adapter: str | None, params: SamplingParams, n: int) -> Generation:
        """Hand the prompts to the engine, in a worker thread: it tokenises and may read the adapter from disk. A
        prompt refused cancels those already queued."""
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        ids: list[str] = []
        try:
            for p, prompt in enumerate(prompts):
                on_event = bridge(loop, lambda event, p=p: events.put_nowait((p, event)))
                ids.append(await run_in_threadpool(engine.submit_generation, prompt.ids_or_text, adapter, params,
                                                   on_event))
        except (Overloaded, EngineDead, LmtuneError) as exc:
            for request_id in ids:
                engine.cancel(request_id)
            if isinstance(exc, (Overloaded, EngineDead)):
                raise
            if adapter is not None and adapter not in engine.adapter_names():  # unloaded meanwhile
                raise unknown_model(engine, adapter) from exc
            raise ApiError(400, str(exc) if len(prompts) == 1 else f"prompt {len(ids)}: {exc}") from exc
        return cls(engine, metrics, request, route, ids, events, prompts, params.n, n, started)

    def cancel(self) -> None:
        for request_id in self.request_ids:
            self.engine.cancel(request_id)

    async def next_event(self) -> tuple[int, GenerationEvent]:
        p, event = await self.events.get()
        if not self.first_seen and (event.text or event.finished):
            self.metrics.first_token(self.route, time.perf_counter() - self.started)
            self.first_seen = True
        if event.finished:
            prompt_tokens = event.prompt_tokens if event.index == 0 else 0  # the rows share one prompt
            self.metrics.tokens(self.request.state.adapter, prompt_tokens, event.completion_tokens)
            if event.finish_reason == "error":
                self.error = self.error or event.error or "unknown error"
        return p, event

    def _accumulate(self, choices: dict[tuple[int, int], Choice], p: int, event: GenerationEvent) -> Choice:
        first = (p, event.index) not in choices
        choice = choices.setdefault((p, event.index), Choice(p * self.rows + event.index))
        if first:
            choice.text = self.prompts[p].echo
            if event.prompt_logprobs is not None:
                choice.logprobs = list(event.prompt_logprobs)
        choice.text += event.text or ""
        if event.logprobs is not None:
            choice.logprobs = [*(choice.logprobs or []), *event.logprobs]
        choice.finish_reason, choice.cumulative_logprob = event.finish_reason, event.cumulative_logprob
        choice.completion_tokens = event.completion_tokens
        return choice

    async def result(self) -> tuple[list[Choice], int, int]:
        """Wait for every row's last event: (the choices by prompt and row, prompt tokens, completion tokens)."""
        choices: dict[tuple[int, int], Choice] = {}
        prompt_tokens: dict[int, int] = {}
        done = 0
        watcher = asyncio.create_task(cancel_on_disconnect(self.request, self.cancel))
        try:
            while done < len(self.prompts) * self.rows:
                p, event = await self.next_event()
                self._accumulate(choices, p, event)
                prompt_tokens[p] = event.prompt_tokens
                done += event.finished
        except asyncio.CancelledError:
            self.cancel()
            raise
        finally:
            watcher.cancel()
        ordered = [choices[key] for key in sorted(choices)]
        return ordered, sum(prompt_tokens.values()), sum(c.completion_tokens for c in ordered)

    def best(self, choices: list[Choice]) -> list[Choice]:
        """Each prompt's `n` choices: with best_of, the rows of highest cumulative log-probability, renumbered."""
        if self.rows == self.n:
            return choices
        kept = []
        for p in range(len(self.prompts)):
            rows = [c for c in choices if c.index // self.rows == p]  # p * rows + row before renumbering
            best = sorted(rows, key=lambda c: -c.cumulative_logprob)[: self.n]
            for j, choice in enumerate(best):
                choice.index = p * self.n + j
            kept += best
        return kept

    async def stream(self, response: CompletionResponse, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: an opening chunk per choice, one per piece of new text (or new log-probabilities),
        each choice's last with its finish reason, an error chunk if a row fails, the usage chunk when asked
        for, then `[DONE]`."""
        finished = False
        choices: dict[tuple[int, int], Choice] = {}
        prompt_tokens: dict[int, int] = {}
        done, total = 0, len(self.prompts) * self.rows
        try:
            for index in range(total):  # headers and the first bytes go out now
                yield sse(response.chunk(index, "", None, first=True))
            while done < total:
                p, event = await self.next_event()
                if event.finish_reason == "error":
                    yield sse(failed(self.error).body())
                    break
                first = (p, event.index) not in choices
                choice = self._accumulate(choices, p, event)
                prompt_tokens[p] = event.prompt_tokens
                done += event.finished
                text = (self.prompts[p].echo if first else "") + (event.text or "")
                logprobs = None
                if event.logprobs is not None:
                    logprobs = [*(event.prompt_logprobs or []), *event.logprobs]
                if event.finished or text or logprobs:
                    yield sse(response.chunk(choice.index, text, event.finish_reason if event.finished else None,
                                             logprobs=logprobs))
            else:
                if include_usage:
                    completion = sum(c.completion_tokens for c in choices.values())
                    yield sse(response.usage_chunk(usage(sum(prompt_tokens.values()), completion)))
            finished = True
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away (or the server is stopping): free the batch slots
                self.cancel()
            elif self.error:
                self.cancel()  # the other rows of a failed request stop too
            self.metrics.stream_done(self.route, time.perf_counter() - self.started)


def streaming(events: AsyncIterator[str], request: Request) -> StreamingResponse:
    request.state.streaming = True  # the metrics middleware leaves its timing to the stream
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
