"""The HTTP layer of `lmtune serve`: OpenAI-compatible routes over the mixed-adapter engine.

Conventions are vLLM's (shared/NOTES.md): the OpenAI `model` field names the adapter (or the base model, or is
left out for the base), `/v1/models` lists adapters with their parent, adapters load and unload at run time.
Errors always have OpenAI's shape: `{"error": {"message", "type", "code", "param"}}`.

The engine runs its own scheduler thread and reports through callbacks on that thread; each request bridges them
into asyncio with `loop.call_soon_threadsafe`. A request the engine refuses (bad input, full queue) is refused
before it joins a batch, so it never disturbs the other requests.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmtune.errors import LmtuneError
from lmtune.serve.engine import EngineDead, GenerationEvent, Overloaded, SamplingParams
from lmtune.serve.guard import ApiKeyMiddleware, BodyLimitMiddleware
from lmtune.serve.metrics import ServeMetrics
from lmtune.serve.schemas import (
    STATUS_TYPES, ApiError, ChatRequest, ClassifyRequest, CompletionRequest, LoadAdapterRequest, VllmLoadRequest, VllmUnloadRequest,
    _Sampling, overloaded_error, validation_message,
)

# ---- the app ------------------------------------------------------------------------------------------------------


DEFAULT_MAX_BODY_BYTES = 8 * 2**20


def create_app(engine, api_keys: list[str] | None = None, metrics: ServeMetrics | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `engine` (already built; the caller starts and shuts it down).

    `api_keys`: when given (non-empty), every route but `/health` and `/metrics` (as in vLLM) needs
    `Authorization: Bearer <key>`, `/docs` and `/openapi.json` included; it is checked before the body is read.
    `metrics`: pass the `ServeMetrics` whose `observer` the engine was built with, so batch sizes are recorded; by
    default a fresh one is made and attached to the engine if it can be. `max_body_bytes`: larger bodies get 413.
    """
    keys = [k for k in (api_keys or []) if k]
    metrics = metrics or ServeMetrics()
    metrics.attach(engine)
    app = FastAPI(title="lmtune serve", version="1", docs_url="/docs", redoc_url=None)
    app.state.engine, app.state.metrics = engine, metrics
    # The last added runs first: metrics count every answer, then the key, then the size, then FastAPI parses.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(metrics.middleware_class(), metrics=metrics)

    # -- error handlers --
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc)
        return ApiError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return ApiError(exc.status_code, str(exc.detail), STATUS_TYPES.get(exc.status_code, "api_error"),
                        headers=dict(exc.headers or {})).response()

    @app.exception_handler(Overloaded)
    async def _overload(request: Request, exc: Overloaded):
        return overloaded_error(exc).response()

    @app.exception_handler(EngineDead)
    async def _dead(request: Request, exc: EngineDead):
        return ApiError(503, str(exc), "server_error", "engine_dead").response()

    @app.exception_handler(LmtuneError)
    async def _bad_input(request: Request, exc: LmtuneError):
        return ApiError(400, str(exc)).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # still OpenAI-shaped JSON, never a plain-text 500
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", "internal_error").response()

    # -- helpers --
    def adapter_names() -> list[str]:
        names = getattr(engine.store, "names", None)  # cheaper than list(): no per-adapter info
        return list(names()) if callable(names) else [info.name for info in engine.store.list()]

    def resolve(model: str | None, request: Request) -> str | None:
        """The adapter a request names (None: the base model); 404 naming the known ones when unknown."""
        if model in (None, "", engine.base_name):
            request.state.adapter = "base"
            return None
        names = adapter_names()
        if model in names:
            request.state.adapter = model
            return model
        raise _unknown(model, names)

    def _unknown(model: str, names: list[str]) -> ApiError:
        close = difflib.get_close_matches(model, names + [engine.base_name], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        shown = sorted(names)[:20]
        known = (", ".join(shown) + (f" and {len(names) - 20} more (GET /v1/models)" if len(names) > 20 else "")
                 or "(no adapters loaded)")
        return ApiError(404, f"unknown model '{model}'.{hint} Known: base '{engine.base_name}'; adapters: {known}",
                        "not_found_error", "model_not_found", param="model")

    def public_base(base: str | None) -> str | None:
        """The base an adapter names, as clients may see it: the served base's name when it is that model (runs
        record the resolved cache folder), else only a path's last part, never a folder of this server."""
        if not base:
            return None
        path = str(getattr(engine, "base_path", ""))
        if base in (engine.base_name, path) or (path and base.rstrip("/").endswith(path.rstrip("/"))):
            return engine.base_name
        return base.rstrip("/").rsplit("/", 1)[-1] if base.startswith(("/", "~", ".")) else base

    def refuse_n(body: _Sampling) -> None:
        if body.n != 1:
            raise ApiError(400, f"n={body.n} is not supported: one choice per request (send n requests instead)",
                           param="n", code="unsupported_value")

    async def submit(prompt, adapter: str | None, params: SamplingParams) -> tuple[str, asyncio.Queue]:
        """Hand a request to the engine (in a worker thread: it tokenises and may read the adapter from disk)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_event(event: GenerationEvent) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop is closed (server shutting down)
                pass

        try:
            request_id = await run_in_threadpool(engine.submit_generation, prompt, adapter, params, on_event)
        except (Overloaded, EngineDead):
            raise
        except LmtuneError as exc:
            if adapter is not None and adapter not in adapter_names():  # unloaded meanwhile
                raise _unknown(adapter, adapter_names()) from exc
            raise ApiError(400, str(exc)) from exc
        return request_id, queue

    async def run_to_end(request_id: str, queue: asyncio.Queue, adapter_label: str, route: str, started: float,
                         request: Request):
        """Wait for the last event; returns (text, last event). A client that hangs up cancels the generation at
        once: a watcher waits for the disconnect itself (events arrive every step, so polling between them never
        ran)."""
        pieces, first = [], True
        watcher = asyncio.create_task(cancel_on_disconnect(request, request_id))
        try:
            while True:
                event: GenerationEvent = await queue.get()
                if first and (event.text or event.finished):
                    metrics.first_token(route, time.perf_counter() - started)
                    first = False
                pieces.append(event.text or "")
                if event.finished:
                    metrics.tokens(adapter_label, event.prompt_tokens, event.completion_tokens)
                    return "".join(pieces), event
        except asyncio.CancelledError:
            engine.cancel(request_id)
            raise
        finally:
            watcher.cancel()

    async def cancel_on_disconnect(request: Request, request_id: str) -> None:
        """The body was read already, so the next message is the disconnect (uvicorn and Starlette's own
        StreamingResponse listen the same way)."""
        while (await request.receive())["type"] != "http.disconnect":
            pass
        engine.cancel(request_id)

    def usage(event: GenerationEvent) -> dict:
        return {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
                "total_tokens": event.prompt_tokens + event.completion_tokens}

    def failed(event: GenerationEvent) -> ApiError:
        return ApiError(500, f"generation failed: {event.error or 'unknown error'}", "server_error", "engine_error")

    def sse(payload: Any) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def stream_events(request_id: str, queue: asyncio.Queue, adapter_label: str, route: str, started: float,
                            chunk, include_usage: bool) -> AsyncIterator[str]:
        """SSE chunks from engine events; `chunk(text, finish_reason, first)` builds one choice payload."""
        finished, first_sent = False, False
        try:
            yield sse(chunk("", None, True))  # the role/opening chunk: headers and first byte go out now
            while True:
                event: GenerationEvent = await queue.get()
                if not first_sent and (event.text or event.finished):
                    metrics.first_token(route, time.perf_counter() - started)
                    first_sent = True
                if event.finished:
                    finished = True
                    metrics.tokens(adapter_label, event.prompt_tokens, event.completion_tokens)
                    if event.finish_reason == "error":
                        yield sse(failed(event).body())
                    else:
                        payload = chunk(event.text or "", event.finish_reason, False)
                        yield sse(payload)
                        if include_usage:
                            yield sse({**payload, "choices": [], "usage": usage(event)})
                    yield "data: [DONE]\n\n"
                    return
                if event.text:
                    yield sse(chunk(event.text, None, False))
        finally:
            if not finished:  # the client went away (or the server is stopping): free the batch slot
                engine.cancel(request_id)
            metrics.stream_done(route, time.perf_counter() - started)

    def streaming(gen: AsyncIterator[str], request: Request) -> StreamingResponse:
        request.state.streaming = True
        return StreamingResponse(gen, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- routes --
    @app.get("/health")
    async def health():
        """503 once the scheduler thread has stopped: a load balancer takes this replica out."""
        body = {"status": "ok", "base": engine.base_name, "base_kind": engine.base_kind,
                "queue_depth": engine.queue_depth()}
        if not engine.alive():
            failure = engine.failure or "the scheduler thread is not running"
            return Response(json.dumps({**body, "status": "dead", "error": failure}), status_code=503,
                            media_type="application/json")
        return body

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render(engine)
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        created = int(time.time())
        base = engine.base_name
        data = [{"id": base, "object": "model", "created": created, "owned_by": "lmtune", "root": base,
                 "parent": None, "kind": "base", "base_kind": engine.base_kind}]
        for info in sorted(engine.store.list(), key=lambda i: i.name):
            data.append({"id": info.name, "object": "model", "created": created, "owned_by": "lmtune",
                         "root": info.path, "parent": public_base(info.base), "kind": info.kind, "method": info.method,
                         "loaded": info.loaded, "nbytes": info.nbytes, "labels": info.labels})
        return {"object": "list", "data": data}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        for entry in (await models())["data"]:
            if entry["id"] == name:
                return entry
        raise _unknown(name, adapter_names())

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        started = time.perf_counter()
        refuse_n(body)
        adapter = resolve(body.model, request)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise ApiError(400, f"one prompt per request (got {len(prompt)}); send several requests instead",
                               param="prompt", code="unsupported_value")
            prompt = prompt[0]
        if isinstance(prompt, list) and not prompt:
            raise ApiError(400, "the prompt is empty", param="prompt")
        model_name = body.model or engine.base_name
        request_id, queue = await submit(prompt, adapter, body.sampling())
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        label = request.state.adapter

        if body.stream:
            def chunk(text, finish_reason, first):
                return {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}

            include = bool(body.stream_options and body.stream_options.include_usage)
            return streaming(stream_events(request_id, queue, label, "/v1/completions", started, chunk, include),
                             request)
        text, last = await run_to_end(request_id, queue, label, "/v1/completions", started, request)
        if last.finish_reason == "error":
            raise failed(last)
        return {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}],
                "usage": usage(last)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        started = time.perf_counter()
        refuse_n(body)
        adapter = resolve(body.model, request)
        if body.max_completion_tokens is not None and body.max_tokens is None:
            body.max_tokens = body.max_completion_tokens
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        ids, stops = await run_in_threadpool(engine.chat_prompt, messages, adapter)
        params = body.sampling()
        params.stop = [*params.stop, *(stop for stop in stops if stop not in params.stop)]  # the adapter's template's
        model_name = body.model or engine.base_name
        request_id, queue = await submit(ids, adapter, params)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        label = request.state.adapter

        if body.stream:
            def chunk(text, finish_reason, first):
                delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
                return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

            include = bool(body.stream_options and body.stream_options.include_usage)
            return streaming(stream_events(request_id, queue, label, "/v1/chat/completions", started, chunk,
                                           include), request)
        text, last = await run_to_end(request_id, queue, label, "/v1/chat/completions", started, request)
        if last.finish_reason == "error":
            raise failed(last)
        return {"id": cid, "object": "chat.completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": last.finish_reason}],
                "usage": usage(last)}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request):
        adapter = resolve(body.model, request)
        if adapter is None:
            raise ApiError(400, f"'{body.model}' is the base model: classification needs an adapter trained with a "
                                "task head (see /v1/models: labels)", param="model")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise ApiError(400, "'input' is empty", param="input")
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def on_done(result) -> None:
            def settle():
                if not done.done():
                    done.set_result(result)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:
                pass

        try:
            request_id = await run_in_threadpool(engine.submit_classification, texts, adapter, on_done)
        except Overloaded as exc:
            raise overloaded_error(exc) from exc
        except EngineDead:
            raise
        except LmtuneError as exc:
            if adapter not in adapter_names():
                raise _unknown(adapter, adapter_names()) from exc
            raise ApiError(400, str(exc), param="model") from exc
        watcher = asyncio.create_task(cancel_on_disconnect(request, request_id))  # a hang-up drops the job
        try:
            result = await done
        except asyncio.CancelledError:
            engine.cancel(request_id)
            raise
        finally:
            watcher.cancel()
        if isinstance(result, LmtuneError):
            raise ApiError(400, str(result))
        if isinstance(result, Exception):
            raise ApiError(500, f"classification failed: {result}", "server_error", "engine_error")
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": body.model,
                "data": [{"index": i, "object": "classification", "label": row["label"],
                          "probabilities": row["probabilities"]} for i, row in enumerate(result)]}

    # -- adapters at run time --
    async def load(name: str, path: str) -> dict:
        if name == engine.base_name:
            raise ApiError(409, f"'{name}' is the base model's name; choose another", "conflict_error",
                           "name_taken", param="name")
        if name in adapter_names():
            raise ApiError(409, f"an adapter named '{name}' is already loaded; unload it first", "conflict_error",
                           "name_taken", param="name")
        try:
            await run_in_threadpool(engine.store.register, name, path)
        except LmtuneError as exc:
            raise ApiError(400, str(exc), param="path") from exc
        for info in engine.store.list():
            if info.name == name:
                return {"id": info.name, "object": "model", "kind": info.kind, "parent": public_base(info.base),
                        "root": info.path, "method": info.method, "labels": info.labels, "loaded": info.loaded}
        return {"id": name, "object": "model"}

    async def unload(name: str) -> dict:
        if name not in adapter_names():
            raise _unknown(name, adapter_names())
        try:
            await run_in_threadpool(engine.store.unregister, name)
        except LmtuneError as exc:
            raise ApiError(400, str(exc)) from exc
        return {"id": name, "object": "model", "deleted": True}

    @app.post("/v1/adapters", status_code=201)
    async def load_adapter(body: LoadAdapterRequest):
        return await load(body.name, body.path)

    @app.delete("/v1/adapters/{name:path}")
    async def unload_adapter(name: str):
        return await unload(name)

    @app.post("/v1/load_lora_adapter")
    async def vllm_load(body: VllmLoadRequest):  # vLLM's spelling, any adapter kind
        await load(body.lora_name, body.lora_path)
        return Response(f"Success: adapter '{body.lora_name}' added successfully.", media_type="text/plain")

    @app.post("/v1/unload_lora_adapter")
    async def vllm_unload(body: VllmUnloadRequest):
        await unload(body.lora_name)
        return Response(f"Success: adapter '{body.lora_name}' removed successfully.", media_type="text/plain")

    return app
