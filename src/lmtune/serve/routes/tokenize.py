"""vLLM's `/tokenize` and `/detokenize`: token ids as the request's adapter's generation sees them (a chat request
rendered with the adapter's own template), and text back from ids."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from lmtune.serve.routes.deps import EngineDep, resolve_adapter
from lmtune.serve.schemas import ApiError, DetokenizeRequest, TokenizeRequest

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request, engine: EngineDep):
    adapter = resolve_adapter(engine, body.model, request)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(400, "send either 'prompt' (text) or 'messages' (a chat)", param="prompt")
    if body.messages is not None:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(f"messages.{i}")}
                    for i, m in enumerate(body.messages)]
        ids, _ = await run_in_threadpool(engine.chat_prompt, messages, adapter)
    else:
        ids = await run_in_threadpool(engine.tokenize, body.prompt, engine.prompt_limit,
                                      add_special_tokens=body.add_special_tokens)
    served = engine.adapter(adapter)
    virtual = served.body.virtual_tokens() if served is not None and served.body is not None else 0
    answer = {"count": len(ids), "max_model_len": engine.context, "tokens": ids, "virtual_tokens": virtual}
    if body.return_token_strs:
        answer["token_strs"] = engine.tokenizer.convert_ids_to_tokens(ids)
    return answer


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request, engine: EngineDep):
    resolve_adapter(engine, body.model, request)
    return {"prompt": engine.detokenize(body.tokens)}
