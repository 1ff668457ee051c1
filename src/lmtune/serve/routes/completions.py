"""`/v1/completions` and `/v1/chat/completions`: each turns its body into a prompt and sampling parameters, then
both answer the same way (`answer`), whole or streamed, with bodies from one builder (routes/responses.py)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from lmtune.serve.engine import Engine, SamplingParams
from lmtune.serve.metrics import ServeMetrics
from lmtune.serve.routes.deps import EngineDep, MetricsDep, resolve_adapter
from lmtune.serve.routes.generation import Generation, failed, streaming
from lmtune.serve.routes.responses import CHAT, TEXT, ChoiceStyle, CompletionResponse
from lmtune.serve.schemas import ApiError, ChatRequest, CompletionRequest, _Sampling

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, engine: EngineDep, metrics: MetricsDep):
    started = time.perf_counter()
    refuse_n(body)
    adapter = resolve_adapter(engine, body.model, request)
    return await answer(engine, metrics, request, body, TEXT, started, one_prompt(body.prompt), adapter,
                        body.sampling())


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, engine: EngineDep, metrics: MetricsDep):
    started = time.perf_counter()
    refuse_n(body)
    adapter = resolve_adapter(engine, body.model, request)
    if body.max_completion_tokens is not None and body.max_tokens is None:
        body.max_tokens = body.max_completion_tokens
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    ids, stops = await run_in_threadpool(engine.chat_prompt, messages, adapter)  # tokenising: off the event loop
    params = body.sampling()
    params.stop = [*params.stop, *(stop for stop in stops if stop not in params.stop)]  # the adapter's template's
    return await answer(engine, metrics, request, body, CHAT, started, ids, adapter, params)


async def answer(engine: Engine, metrics: ServeMetrics, request: Request, body: _Sampling, style: ChoiceStyle,
                 started: float, prompt: str | list[int], adapter: str | None, params: SamplingParams):
    """Generate and answer in `style`: a stream of server-sent events, or the whole response."""
    generation = await Generation.submit(engine, metrics, request, style.route, started, prompt, adapter, params)
    response = CompletionResponse(style, body.model or engine.base_name)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return streaming(generation.stream(response, include_usage), request)
    text, last = await generation.result()
    if last.finish_reason == "error":
        raise failed(last)
    return response.whole(text, last)


def refuse_n(body: _Sampling) -> None:
    if body.n != 1:
        raise ApiError(400, f"n={body.n} is not supported: one choice per request (send n requests instead)",
                       param="n", code="unsupported_value")


def one_prompt(prompt: str | list[int] | list[str]) -> str | list[int]:
    """The prompt as the engine takes it: text or token ids (a list holding one text is that text)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise ApiError(400, f"one prompt per request (got {len(prompt)}); send several requests instead",
                           param="prompt", code="unsupported_value")
        return prompt[0]
    if isinstance(prompt, list) and not prompt:
        raise ApiError(400, "the prompt is empty", param="prompt")
    return prompt
