"""One HTTP request carried from the router to an engine replica and its answer carried back (serve/cluster.py).

Ray's HTTP proxy routes an adapter to the replicas that already hold it only by the `serve_multiplexed_model_id`
header, while OpenAI clients name the adapter in the JSON body's `model`. So, as Ray Serve's own OpenAI ingress
(`ray.serve.llm`) does, a thin router reads the body (after the API key and the size limit, as the single server
does) and calls the engine deployment through `handle.options(multiplexed_model_id=model)`. The request travels
as plain data (`ForwardedRequest`); the replica runs it through the same FastAPI app as the single server
(`run_app`) and yields the app's ASGI messages, which the router sends on as they come: streams stay streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

HOP_HEADERS = (b"host", b"content-length", b"transfer-encoding", b"connection")
"""Headers of the client's connection to the router, not of the request the replica's app reads."""


@dataclass(frozen=True)
class ForwardedRequest:
    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None

    @classmethod
    def of(cls, scope: dict, body: bytes) -> ForwardedRequest:
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in HOP_HEADERS]
        headers.append((b"content-length", str(len(body)).encode()))
        client = tuple(scope["client"]) if scope.get("client") else None
        return cls(scope["method"], scope["path"], scope.get("query_string", b""), headers, body, client)

    def scope(self) -> dict:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
                "method": self.method, "path": self.path, "raw_path": self.path.encode(), "root_path": "",
                "query_string": self.query_string, "headers": self.headers, "client": self.client,
                "server": None}


def adapter_named(request: ForwardedRequest) -> str | None:
    """The body's `model`, when it is a JSON object that names one (every route that takes an adapter)."""
    if request.method != "POST" or not request.body.lstrip().startswith(b"{"):
        return None
    try:
        model = json.loads(request.body).get("model")
    except (ValueError, UnicodeDecodeError):
        return None  # the replica's app answers the malformed body with its own 400
    return model if isinstance(model, str) and model else None


async def read_body(receive) -> bytes:
    """The whole body (BodyLimitMiddleware, outside, has bounded it)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError("the client hung up before its body arrived")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


_finishing: set[asyncio.Task] = set()
"""Apps still finishing after their caller went away (kept referenced until done)."""


async def run_app(app, request: ForwardedRequest) -> AsyncIterator[dict]:
    """Run `request` through the ASGI `app` in this process, yielding each message the app sends.

    The app reads the body at once; its next `receive()` waits for the caller to go away. When the caller stops
    iterating (the client hung up, Ray cancelled the call), the app hears `http.disconnect`, which cancels its
    generation in the engine (routes/generation.py), as uvicorn tells the single server."""
    messages: asyncio.Queue = asyncio.Queue()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def run() -> None:
        try:
            await app(request.scope(), receive, messages.put)
        finally:
            messages.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (message := await messages.get()) is not None:
            yield message
        await task  # an exception the app let out (it answers its own errors) is the caller's to see
    finally:
        gone.set()
        if not task.done():
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)
