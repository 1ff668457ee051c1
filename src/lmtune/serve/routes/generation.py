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
from lmtune.serve.routes.responses import CompletionResponse
from lmtune.serve.schemas import ApiError


def bridge(loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]) -> Callable[[Any], None]:
    """A callback for the engine's thread that runs `deliver(value)` on `loop`."""
    def on_engine_thread(value) -> None:
        try:
            loop.call_soon_threadsafe(deliver, value)
        except RuntimeError:  # the loop is closed (server shutting down)
            pass
    return on_engine_thread


async def cancel_on_disconnect(engine: Engine, request: Request, request_id: str) -> None:
    """The body was read already, so the next message is the disconnect (uvicorn and Starlette's own
    StreamingResponse listen the same way): events arrive every step, so polling between them would never run."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    engine.cancel(request_id)


def failed(event: GenerationEvent) -> ApiError:
    return ApiError(500, f"generation failed: {event.error or 'unknown error'}", "server_error", "engine_error")


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


@dataclass
class Generation:
    engine: Engine
    metrics: ServeMetrics
    request: Request
    route: str
    request_id: str
    events: asyncio.Queue
    started: float = field(default_factory=time.perf_counter)
    first_seen: bool = False

    @classmethod
    async def submit(cls, engine: Engine, metrics: ServeMetrics, request: Request, route: str, started: float,
                     prompt: str | list[int], adapter: str | None, params: SamplingParams) -> Generation:
        """Hand the request to the engine, in a worker thread: it tokenises and may read the adapter from disk."""
        events: asyncio.Queue = asyncio.Queue()
        on_event = bridge(asyncio.get_running_loop(), events.put_nowait)
        try:
            request_id = await run_in_threadpool(engine.submit_generation, prompt, adapter, params, on_event)
        except (Overloaded, EngineDead):
            raise
        except LmtuneError as exc:
            if adapter is not None and adapter not in engine.adapter_names():  # unloaded meanwhile
                raise unknown_model(engine, adapter) from exc
            raise ApiError(400, str(exc)) from exc
        return cls(engine, metrics, request, route, request_id, events, started)

    async def next_event(self) -> GenerationEvent:
        event: GenerationEvent = await self.events.get()
        if not self.first_seen and (event.text or event.finished):
            self.metrics.first_token(self.route, time.perf_counter() - self.started)
            self.first_seen = True
        if event.finished:
            self.metrics.tokens(self.request.state.adapter, event.prompt_tokens, event.completion_tokens)
        return event

    async def result(self) -> tuple[str, GenerationEvent]:
        """Wait for the last event: (the whole text, the last event)."""
        pieces = []
        watcher = asyncio.create_task(cancel_on_disconnect(self.engine, self.request, self.request_id))
        try:
            while True:
                event = await self.next_event()
                pieces.append(event.text or "")
                if event.finished:
                    return "".join(pieces), event
        except asyncio.CancelledError:
            self.engine.cancel(self.request_id)
            raise
        finally:
            watcher.cancel()

    async def stream(self, response: CompletionResponse, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: an opening chunk, one per piece of new text, the last with its finish reason (or an
        error chunk), the usage chunk when asked for, then `[DONE]`."""
        finished = False
        try:
            yield sse(response.chunk("", None, first=True))  # headers and the first byte go out now
            while True:
                event = await self.next_event()
                if event.finished:
                    finished = True
                    if event.finish_reason == "error":
                        yield sse(failed(event).body())
                    else:
                        yield sse(response.chunk(event.text or "", event.finish_reason))
                        if include_usage:
                            yield sse(response.usage_chunk(event))
                    yield "data: [DONE]\n\n"
                    return
                if event.text:
                    yield sse(response.chunk(event.text, None))
        finally:
            if not finished:  # the client went away (or the server is stopping): free the batch slot
                self.engine.cancel(self.request_id)
            self.metrics.stream_done(self.route, time.perf_counter() - self.started)


def streaming(events: AsyncIterator[str], request: Request) -> StreamingResponse:
    request.state.streaming = True  # the metrics middleware leaves its timing to the stream
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
