"""`/v1/completions` and `/v1/chat/completions`: each turns its body into prompts and sampling parameters, then
both answer the same way (`answer`), whole or streamed, with bodies from one builder (routes/responses.py)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from lmtune.serve.engine import Engine, SamplingParams
from lmtune.serve.metrics import ServeMetrics
from lmtune.serve.routes.deps import EngineDep, MetricsDep, resolve_adapter
from lmtune.serve.routes.generation import Generation, Prompt, failed, streaming
from lmtune.serve.routes.responses import CHAT, TEXT, ChoiceStyle, CompletionResponse, usage
from lmtune.serve.schemas import ApiError, ChatRequest, CompletionRequest, _Sampling

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, engine: EngineDep, metrics: MetricsDep):
    started = time.perf_counter()
    body.refuse_unservable(engine.has_tool_template, engine.has_fim_tokens)
    adapter = resolve_adapter(engine, body.model, request)
    params = body.sampling()
    params.logprobs, params.echo = body.logprobs, body.echo
    if body.max_tokens == 0 and not body.echo:
        raise ApiError(400, "max_tokens 0 generates nothing: use it with echo (and logprobs) to score the prompt",
                       param="max_tokens")
    params.n = rows_per_prompt(body.n, body.best_of, body.stream)
    prompts = [Prompt(p, echo_text(engine, p) if body.echo else "") for p in all_prompts(body.prompt)]
    return await answer(engine, metrics, request, body, TEXT, started, prompts, adapter, params)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, engine: EngineDep, metrics: MetricsDep):
    started = time.perf_counter()
    body.refuse_unservable(engine.has_tool_template)
    adapter = resolve_adapter(engine, body.model, request)
    if body.max_completion_tokens is not None and body.max_tokens is None:
        body.max_tokens = body.max_completion_tokens
    if body.max_tokens == 0:
        raise ApiError(400, "max_tokens must be at least 1 for chat (a chat request has no echo)", param="max_tokens")
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(f"messages.{i}")}
                for i, m in enumerate(body.messages)]
    ids, stops = await run_in_threadpool(engine.chat_prompt, messages, adapter)  # tokenising: off the event loop
    params = body.sampling()
    params.stop = [*params.stop, *(stop for stop in stops if stop not in params.stop)]  # the adapter's template's
    params.logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params.n = body.n
    return await answer(engine, metrics, request, body, CHAT, started, [Prompt(ids, "")], adapter, params)


async def answer(engine: Engine, metrics: ServeMetrics, request: Request, body: _Sampling, style: ChoiceStyle,
                 started: float, prompts: list[Prompt], adapter: str | None, params: SamplingParams):
    """Generate and answer in `style`: a stream of server-sent events, or the whole response. Each prompt's
    `params.n` rows make its choices (the best `body.n` of them when best_of asked for more)."""
    limit = min(engine.cfg.max_rows_per_request, engine.cfg.max_batch_size)
    if len(prompts) * params.n > limit:
        raise ApiError(400, f"{len(prompts)} prompt(s) × {params.n} row(s) each is more than the {limit} rows one "
                            "request may generate here: send several requests", param="n", code="too_many_rows")
    generation = await Generation.submit(engine, metrics, request, style.route, started, prompts, adapter, params,
                                         body.n)
    response = CompletionResponse(style, body.model or engine.base_name, engine.token_text)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return streaming(generation.stream(response, include_usage), request)
    choices, prompt_tokens, completion_tokens = await generation.result()
    errors = [c for c in choices if c.finish_reason == "error"]
    if errors:
        raise failed(generation.error or "unknown error")
    return response.whole(generation.best(choices), usage(prompt_tokens, completion_tokens))


def rows_per_prompt(n: int, best_of: int | None, stream: bool) -> int:
    if best_of is None:
        return n
    if best_of < n:
        raise ApiError(400, f"best_of ({best_of}) must be at least n ({n})", param="best_of")
    if stream and best_of > n:
        raise ApiError(400, "best_of > n cannot stream: the best choices are known only at the end", param="best_of")
    return best_of


def all_prompts(prompt: str | list[int] | list[str] | list[list[int]]) -> list[str | list[int]]:
    """The prompts as the engine takes them: texts or token-id lists (a list of ints is one prompt)."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ApiError(400, "the prompt is empty", param="prompt")
    if isinstance(prompt[0], int):
        return [prompt]
    return list(prompt)


def echo_text(engine: Engine, prompt: str | list[int]) -> str:
    """The prompt's text as echo shows it: the text itself, or token ids decoded."""
    return prompt if isinstance(prompt, str) else engine.detokenize(prompt)
