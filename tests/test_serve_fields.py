"""The OpenAI request fields real clients send, through the official `openai` client against a real uvicorn:
logprobs and echo (lm-evaluation-harness's `local-completions` shape, token-id prompts), n and best_of, penalties
and logit_bias, streamed chat with logprobs, /tokenize and /detokenize, and the named refusals. Numbers are checked
against the engine's own logits (test_serve_engine.py holds them against the trained adapters' full forward)."""

from __future__ import annotations

import math

import httpx
import pytest
import torch

from test_serve_http import API_KEY, PROMPT, alone, client, engine, served, server  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def oai(server):  # noqa: F811
    with openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0) as openai_client:
        yield openai_client


def _logprobs(engine, ids, adapter) -> torch.Tensor:  # noqa: F811
    return torch.log_softmax(engine.prefill_logits([ids], [adapter])[0].float(), -1)


@pytest.mark.parametrize("adapter", ["gen-lora", "gen-prompt"])
def test_echo_with_logprobs_scores_token_id_prompts_as_lm_eval_sends_them(oai, engine, adapter):  # noqa: F811
    """lm-evaluation-harness's request: token-id prompts in a batch, echo, logprobs=1, max_tokens=1."""
    prompts = [engine.tokenize(PROMPT), engine.tokenize("copy blue 7 the answer is 7")]
    out = oai.completions.create(model=adapter, prompt=prompts, echo=True, logprobs=1, max_tokens=1, temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    for ids, choice in zip(prompts, out.choices):
        lp = choice.logprobs
        assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert choice.text.startswith(engine.detokenize(ids))
        reference = _logprobs(engine, ids, adapter)
        for j in range(1, len(ids)):
            assert abs(lp.token_logprobs[j] - reference[j - 1, ids[j]]) < 1e-4
            assert lp.tokens[j] == engine.token_text(ids[j])
            assert max(lp.top_logprobs[j].values()) == pytest.approx(float(reference[j - 1].max()), abs=1e-4)
        assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    # lm-eval reads token_logprobs[ctxlen:-1]: the last entry must be the generated one, even when it is the end
    eos = str(engine.end_ids[0])
    ended = oai.completions.create(model=adapter, prompt=prompts[0], echo=True, logprobs=1, max_tokens=1,
                                   logit_bias={eos: 100}).choices[0]
    assert ended.finish_reason == "stop" and len(ended.logprobs.token_logprobs) == len(prompts[0]) + 1
    assert ended.logprobs.token_logprobs[:-1] == out.choices[0].logprobs.token_logprobs[:-1]
    scored = oai.completions.create(model=adapter, prompt=prompts[0], echo=True, logprobs=0, max_tokens=0)
    assert len(scored.choices[0].logprobs.token_logprobs) == len(prompts[0]) and scored.usage.completion_tokens == 0


def test_logprobs_of_generated_tokens_and_n_and_best_of(oai, engine):  # noqa: F811
    out = oai.completions.create(model="gen-lora", prompt=PROMPT, logprobs=3, max_tokens=4, temperature=0)
    choice = out.choices[0]
    assert choice.text == alone(engine, PROMPT, "gen-lora", max_tokens=4)
    ids = engine.tokenize(PROMPT)
    generated = [engine.tokenizer.convert_tokens_to_ids(t) for t in choice.logprobs.tokens]
    reference = _logprobs(engine, ids + generated, "gen-lora")
    for k, score in enumerate(choice.logprobs.token_logprobs):
        assert abs(score - reference[len(ids) - 1 + k].max()) < 1e-4  # greedy: the best token
        assert len(choice.logprobs.top_logprobs[k]) == 3
    sampled = dict(model="gen-lora", prompt=PROMPT, max_tokens=5, temperature=1.0, seed=3)
    two = oai.completions.create(n=2, logprobs=0, **sampled)
    assert [c.index for c in two.choices] == [0, 1]
    for i, c in enumerate(two.choices):  # choice i samples with seed 3 + i
        assert c.text == alone(engine, PROMPT, "gen-lora", max_tokens=5, temperature=1.0, seed=3 + i)
    three = oai.completions.create(n=3, logprobs=0, **sampled).choices
    best = oai.completions.create(n=1, best_of=3, logprobs=0, **sampled).choices
    assert len(best) == 1 and best[0].index == 0
    assert best[0].text == max(three, key=lambda c: sum(c.logprobs.token_logprobs)).text


def test_penalties_and_logit_bias_through_the_client(oai, engine):  # noqa: F811
    ids = engine.tokenize(PROMPT)
    logits = engine.prefill_logits([ids], ["gen-lora"])[0][-1]
    first, second = logits.topk(2).indices.tolist()
    out = oai.completions.create(model="gen-lora", prompt=PROMPT, max_tokens=1, logprobs=0,
                                 logit_bias={str(first): -100}, presence_penalty=0.5, frequency_penalty=0.5)
    assert out.choices[0].logprobs.tokens == [engine.token_text(second)]
    # the reported log-probability stays the model's own (before the bias), as OpenAI and vLLM report it
    assert out.choices[0].logprobs.token_logprobs[0] == pytest.approx(float(torch.log_softmax(logits, -1)[second]),
                                                                      abs=1e-4)
    extra = oai.completions.create(model="gen-lora", prompt=PROMPT, max_tokens=3,
                                   extra_body={"repetition_penalty": 1.2, "min_tokens": 3})
    assert extra.usage.completion_tokens == 3


@pytest.mark.parametrize("field, value", [("presence_penalty", 2.0), ("frequency_penalty", 2.0),
                                          ("repetition_penalty", 3.0)])
def test_each_penalty_reaches_the_engine_through_the_client(oai, engine, field, value):  # noqa: F811
    """Each penalty alone, sent as the client sends it (vLLM's repetition_penalty in extra_body), gives the engine's
    penalised text; min_tokens keeps the row going, so a penalty has generated tokens to act on."""
    sampling = {"max_tokens": 8, "min_tokens": 8}
    penalised = alone(engine, PROMPT, "gen-lora", **sampling, **{field: value})
    assert penalised != alone(engine, PROMPT, "gen-lora", **sampling), "this penalty changes nothing here"
    top = {} if field == "repetition_penalty" else {field: value}
    extra = {"min_tokens": 8, **({field: value} if field == "repetition_penalty" else {})}
    out = oai.completions.create(model="gen-lora", prompt=PROMPT, max_tokens=8, extra_body=extra, **top)
    assert out.choices[0].text == penalised
    chat = oai.chat.completions.create(model="gen-lora", messages=[{"role": "user", "content": PROMPT}],
                                       max_tokens=8, extra_body=extra, **top)
    ids, stops = engine.chat_prompt([{"role": "user", "content": PROMPT}], "gen-lora")
    chat_penalised = alone(engine, ids, "gen-lora", stop=stops, **sampling, **{field: value})
    assert chat_penalised != alone(engine, ids, "gen-lora", stop=stops, **sampling)
    assert chat.choices[0].message.content == chat_penalised


def test_chat_n_2_samples_each_choice_with_its_own_seed(oai, engine):  # noqa: F811
    messages = [{"role": "user", "content": PROMPT}]
    out = oai.chat.completions.create(model="gen-lora", messages=messages, n=2, max_tokens=6, temperature=1.0, seed=5)
    ids, stops = engine.chat_prompt(messages, "gen-lora")
    wanted = [alone(engine, ids, "gen-lora", stop=stops, max_tokens=6, temperature=1.0, seed=5 + i) for i in (0, 1)]
    assert [c.index for c in out.choices] == [0, 1] and wanted[0] != wanted[1]
    assert [c.message.content for c in out.choices] == wanted


def test_streamed_chat_with_logprobs_equals_the_whole_answer(oai):
    messages = [{"role": "user", "content": PROMPT}]
    whole = oai.chat.completions.create(model="gen-lora", messages=messages, max_tokens=6, logprobs=True,
                                        top_logprobs=2)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 and t.bytes == list(t.token.encode()) for t in content)
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in content)  # greedy
    stream = oai.chat.completions.create(model="gen-lora", messages=messages, max_tokens=6, logprobs=True,
                                         top_logprobs=2, stream=True)
    text, streamed = "", []
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            streamed += choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    assert text == whole.choices[0].message.content
    assert [(t.token, round(t.logprob, 5)) for t in streamed] == [(t.token, round(t.logprob, 5)) for t in content]
    assert math.isclose(sum(t.logprob for t in streamed), sum(t.logprob for t in content), abs_tol=1e-4)


def test_refused_fields_name_themselves_through_the_client(oai):
    with pytest.raises(openai.BadRequestError, match="'suffix' is not supported.*fill-in-the-middle"):
        oai.completions.create(model="gen-lora", prompt=PROMPT, suffix="end")
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported"):
        oai.chat.completions.create(model="gen-lora", messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match="unknown field 'frobnicate'"):
        oai.completions.create(model="gen-lora", prompt=PROMPT, extra_body={"frobnicate": 1})
    ok = oai.chat.completions.create(model="gen-lora", messages=[{"role": "developer", "content": "copy"},
                                                                 {"role": "user", "content": PROMPT}],
                                     max_tokens=2, response_format={"type": "text"})
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_every_field_the_client_knows_is_served_or_refused_by_name(oai):
    """Each keyword of the installed client's create methods is a field of its route: none is an 'unknown field'
    (a newer client's new field fails here until it is served or refused). Tags and cache hints change nothing;
    options lmtune lacks are refused with the reason."""
    import inspect

    from lmtune.serve.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

    for create, request in [(oai.chat.completions.create, ChatRequest), (oai.completions.create, CompletionRequest),
                            (oai.embeddings.create, EmbeddingRequest)]:
        known = set(inspect.signature(create).parameters) - {"extra_headers", "extra_query", "extra_body", "timeout"}
        assert known <= set(request.model_fields), (request.__name__, sorted(known - set(request.model_fields)))
    messages = [{"role": "user", "content": PROMPT}]
    plain = oai.chat.completions.create(model="gen-lora", messages=messages, max_tokens=4).choices[0].message.content
    tagged = oai.chat.completions.create(model="gen-lora", messages=messages, max_tokens=4, store=False,
                                         service_tier="auto", metadata={"run": "1"}, safety_identifier="u1",
                                         prompt_cache_key="k", prompt_cache_retention="24h", user="u")
    assert tagged.choices[0].message.content == plain
    for field, value, why in [("store", True, "not stored"), ("service_tier", "flex", "one service tier"),
                              ("verbosity", "low", "verbosity"), ("reasoning_effort", "low", "reasoning")]:
        with pytest.raises(openai.BadRequestError, match=f"'{field}' is not supported: .*{why}"):
            oai.chat.completions.create(model="gen-lora", messages=messages, max_tokens=4, **{field: value})


def test_tokenize_and_detokenize(server, engine):  # noqa: F811
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server, headers=headers, timeout=30) as http:
        out = http.post("/tokenize", json={"model": "gen-prompt", "prompt": PROMPT, "return_token_strs": True}).json()
        assert out["tokens"] == engine.tokenize(PROMPT) and out["count"] == len(out["tokens"])
        assert out["virtual_tokens"] == 4 and out["max_model_len"] == engine.context and len(out["token_strs"]) == out["count"]
        chat = http.post("/tokenize", json={"model": "gen-lora", "messages": [{"role": "user", "content": PROMPT}]}).json()
        assert chat["tokens"] == engine.chat_prompt([{"role": "user", "content": PROMPT}], "gen-lora")[0]
        back = http.post("/detokenize", json={"model": "gen-lora", "tokens": out["tokens"]}).json()
        assert back["prompt"] == engine.tokenizer.decode(out["tokens"])
        assert http.post("/detokenize", json={"tokens": [10**9]}).status_code == 400
        assert http.post("/tokenize", json={"model": "nope", "prompt": "x"}).status_code == 404
        assert http.post("/tokenize", json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
