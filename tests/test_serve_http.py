"""`lmtune serve` through HTTP: the FastAPI app in-process (TestClient) and a real uvicorn on loopback.

One tiny random Llama serves three tiny trained adapters (generative LoRA, generative prompt tuning,
classification LoRA with a head). Texts the HTTP layer returns are checked against the engine's own output.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import toy_rows, write_jsonl

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from lmtune.errors import LmtuneError
from test_generative import WORDS, copy_rows  # the learnable "copy" instruction rows

PROMPT = "copy red 3"
API_KEY = "test-key-1"


def _train(model: Path, data: dict, root: Path, name: str, method: dict, task: str) -> None:
    from lmtune.runconfig import resolve_config
    from lmtune.train import train

    raw = {
        "model": {"name": str(model), "max_length": 48},
        "data": {k: str(v) for k, v in data.items()},
        "method": method,
        "train": {"batch_size": 16, "progress": False, "num_threads": 1, "learning_rate": 1e-2, "max_steps": 3,
                  "eval_every": "no", "warmup_ratio": 0.0},
        "output": {"dir": str(root), "name": name},
    }
    if task != "classification":
        raw["task"] = {"name": task, "generation": {"max_new_tokens": 4, "batch_size": 8}}
    train(resolve_config(raw))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base model folder, adapter root) with gen-lora, gen-prompt (generative) and cls-lora (classification)."""
    from lmtune.data.templates import ALPACA, ALPACA_WITH_INPUT
    from lmtune.models.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("serve-http")
    gen = {"train": write_jsonl(folder / "gen-train.jsonl", copy_rows(32, 1)),
           "validation": write_jsonl(folder / "gen-val.jsonl", copy_rows(8, 2)),
           "test": write_jsonl(folder / "gen-test.jsonl", copy_rows(4, 3))}
    cls = {"train": write_jsonl(folder / "cls-train.jsonl", toy_rows(32, 1)),
           "validation": write_jsonl(folder / "cls-val.jsonl", toy_rows(8, 2))}
    texts = [ALPACA, ALPACA_WITH_INPUT, " ".join(WORDS), "copy the answer is 0 1 2 3 4 5 6 7 8 9",
             "user system assistant :", *(r["text"] for r in toy_rows(64, 0))]
    model = build_tiny_model("llama", folder / "llama", texts)
    root = folder / "runs"
    _train(model, gen, root, "gen-lora", {"name": "lora", "rank": 4}, "instruction")
    _train(model, gen, root, "gen-prompt", {"name": "prompt_tuning", "num_virtual_tokens": 4}, "instruction")
    _train(model, cls, root, "cls-lora", {"name": "lora", "rank": 4}, "classification")
    return model, root


def _engine(model, root, **cfg):
    from lmtune.serve.engine import Engine, EngineConfig
    from lmtune.serve.metrics import ServeMetrics

    metrics = ServeMetrics()
    engine = Engine(str(model), root, EngineConfig(**{"dtype": "float32", **cfg}), observer=metrics.observer, num_threads=1)
    return engine, metrics


@pytest.fixture(scope="module")
def engine(served):
    model, root = served
    engine, metrics = _engine(model, root, max_batch_size=8, max_queue=64)
    for info in engine.store.list():
        engine.store.get(info.name)  # load now: listings show each adapter's kind
    engine.start()
    engine.test_metrics = metrics
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def client(engine):
    from lmtune.serve.app import create_app

    with TestClient(create_app(engine, None, metrics=engine.test_metrics)) as test_client:
        yield test_client


@contextmanager
def loopback(app):
    """A real uvicorn serving `app` on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=2)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not uv.started and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def server(engine):
    """A real uvicorn on a free loopback port, API keys on; the same engine. Yields its base URL."""
    from lmtune.serve.app import create_app

    with loopback(create_app(engine, [API_KEY])) as url:
        yield url


def alone(engine, prompt, adapter, **sampling) -> str:
    from lmtune.serve.engine import SamplingParams

    return engine.generate([prompt], [adapter], SamplingParams(**sampling))[0]


def sse_chunks(lines) -> list:
    """The data payloads of an SSE stream, "[DONE]" kept as a string."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]


# ---- in-process (TestClient) ----------------------------------------------------------------------------------


def test_health_and_models_list_adapters_with_kind_and_parent(client, engine):
    assert client.get("/health").json()["status"] == "ok"
    data = client.get("/v1/models").json()["data"]
    by_id = {m["id"]: m for m in data}
    assert data[0]["id"] == engine.base_name and data[0]["kind"] == "base"
    assert by_id["gen-lora"]["kind"] == "weight_delta" and by_id["gen-prompt"]["kind"] == "virtual_tokens"
    assert by_id["cls-lora"]["labels"] and sorted(by_id["cls-lora"]["labels"]) == ["neg", "pos"]
    assert all(by_id[n]["parent"] and by_id[n]["object"] == "model" for n in ("gen-lora", "gen-prompt", "cls-lora"))
    assert client.get("/v1/models/gen-lora").json()["kind"] == "weight_delta"


@pytest.mark.parametrize("adapter", ["gen-lora", "gen-prompt", None])
def test_completion_is_openai_shaped_and_equals_the_engine_alone(client, engine, adapter):
    body = {"prompt": PROMPT, "max_tokens": 6, **({"model": adapter} if adapter else {})}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-") and out["model"] == (adapter or engine.base_name)
    choice = out["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] in ("stop", "length")
    assert choice["text"] == alone(engine, PROMPT, adapter, max_tokens=6)
    usage = out["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_completion_sends_sse_chunks_then_done(client, engine):
    body = {"model": "gen-lora", "prompt": PROMPT, "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = sse_chunks(response.iter_lines())
    assert chunks[-1] == "[DONE]"
    events = chunks[:-1]
    assert all(c["object"] == "text_completion" for c in events)
    with_choices = [c for c in events if c["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in with_choices[:-1])
    text = "".join(c["choices"][0]["text"] for c in with_choices)
    assert text == alone(engine, PROMPT, "gen-lora", max_tokens=8)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= 1


def test_chat_completion_plain_and_streaming(client, engine):
    messages = [{"role": "system", "content": "copy"}, {"role": "user", "content": PROMPT}]
    response = client.post("/v1/chat/completions", json={"model": "gen-lora", "messages": messages, "max_tokens": 6})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    ids, stops = engine.chat_prompt(messages, "gen-lora")  # the adapter's training template (Alpaca here)
    assert engine.tokenizer.decode(ids).lower().startswith("below is an instruction") and stops
    assert out["choices"][0]["message"]["content"] == alone(engine, ids, "gen-lora", max_tokens=6, stop=stops)
    assert out["id"].startswith("chatcmpl-") and out["usage"]["completion_tokens"] >= 1
    body = {"model": "gen-lora", "messages": messages, "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
        chunks = sse_chunks(streamed.iter_lines())
    assert chunks[-1] == "[DONE]" and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    events = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == events[0]["id"] for c in events)
    assert events[-1]["choices"] == [] and events[-1]["usage"] == out["usage"]  # the same generation, greedy
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1])
    assert text == out["choices"][0]["message"]["content"]
    assert events[-2]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]


def test_chat_uses_the_models_chat_template_when_it_has_one(engine):
    tokenizer = engine.tokenizer
    messages = [{"role": "user", "content": "copy red"}]
    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        assert tokenizer.decode(engine.chat_prompt(messages, None)[0]) == "user : copy red assistant :"  # the fallback
        tokenizer.chat_template = (
            "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant {% endif %}"
        )
        ids = engine.chat_prompt(messages, None)[0]
        assert ids == tokenizer("<s>user copy red</s><s>assistant ", add_special_tokens=False)["input_ids"]
        tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
        with pytest.raises(LmtuneError, match="roles must alternate"):
            engine.chat_prompt(messages, None)
    finally:  # the engine serves the module's other tests
        tokenizer.chat_template = saved


def test_classify_returns_labels_and_probabilities(client, engine):
    texts = ["great product", "awful broken item"]
    response = client.post("/v1/classify", json={"model": "cls-lora", "input": texts})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row["index"] for row in data] == [0, 1]
    expected = engine.classify(texts, "cls-lora")
    for row, want in zip(data, expected):
        assert row["label"] == want["label"] and row["label"] in ("pos", "neg")
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
    single = client.post("/v1/classify", json={"model": "cls-lora", "input": "great"}).json()["data"]
    assert len(single) == 1
    no_head = client.post("/v1/classify", json={"model": "gen-lora", "input": "great"})
    assert no_head.status_code == 400 and "classification" in error_of(no_head)["message"]
    base = client.post("/v1/classify", json={"model": engine.base_name, "input": "great"})
    assert base.status_code == 400


BAD_REQUESTS = [
    ("/v1/completions", {"prompt": "x", "frobnicate": 1}, 400, "frobnicate"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "x", "stream": "yes please"}, 400, "'stream'"),
    ("/v1/completions", {"prompt": 5}, 400, "'prompt'"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "n": 2, "best_of": 1}, 400, "best_of"),
    ("/v1/completions", {"prompt": "x", "n": 20}, 400, "rows"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, 400, "fill-in-the-middle"),
    ("/v1/completions", {"prompt": "x", "logprobs": 50}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"99999": 5}}, 400, "outside the vocabulary"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "echo"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     400, "'tools' is not supported: the base model's chat template has no tool support"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "grammar"}}, 400, "response_format.type"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_schema"}}, 400, "json_schema"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]}, 400, "messages.0.content.0.type"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "4", "tool_call_id": "a"}]}, 400, "tool"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": " ".join(["red"] * 400)}, 400, "context"),
    ("/v1/completions", {"prompt": ["a"] * 9}, 400, "rows"),
    ("/v1/completions", {"prompt": "x", "model": "gen-lorra"}, 404, "did you mean 'gen-lora'"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/classify", {"model": "nope", "input": ["x"]}, 404, "nope"),
    ("/v1/classify", {"model": "cls-lora", "input": []}, 400, "input"),
    ("/v1/adapters", {"name": "evil", "path": "../../"}, 400, "outside"),
    ("/v1/adapters", {"name": "evil", "path": "/etc"}, 400, "outside"),
    ("/v1/adapters", {"name": "../evil", "path": "gen-lora"}, 400, "name"),
    ("/v1/adapters", {"name": "gen-lora", "path": "gen-lora"}, 409, "already loaded"),
]


def test_bad_requests_get_4xx_with_a_message_while_a_good_one_streams(client, engine):
    good_body = {"model": "gen-prompt", "prompt": PROMPT, "max_tokens": 150, "stream": True}
    result: dict = {}

    def good() -> None:
        with client.stream("POST", "/v1/completions", json=good_body) as response:
            result["status"] = response.status_code
            result["chunks"] = sse_chunks(response.iter_lines())

    thread = threading.Thread(target=good)
    thread.start()
    for route, body, status, needle in BAD_REQUESTS:
        response = client.post(route, json=body)
        assert response.status_code == status, (body, response.text)
        assert needle.lower() in error_of(response)["message"].lower(), (body, response.text)
    bad_json = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "json" in error_of(bad_json)["message"].lower()
    assert client.delete("/v1/adapters/never-loaded").status_code == 404
    assert client.get("/v1/nothing-here").status_code == 404
    thread.join(timeout=60)
    assert result["status"] == 200 and result["chunks"][-1] == "[DONE]"
    text = "".join(c["choices"][0]["text"] for c in result["chunks"][:-1] if c["choices"])
    assert text == alone(engine, PROMPT, "gen-prompt", max_tokens=150)


def test_api_keys_guard_v1_routes_but_not_health(engine):
    from lmtune.serve.app import create_app

    with TestClient(create_app(engine, ["k1", "k2"])) as guarded:
        assert guarded.get("/health").status_code == 200
        missing = guarded.get("/v1/models")
        assert missing.status_code == 401 and error_of(missing)["type"] == "authentication_error"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert guarded.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        for key in ("k1", "k2"):
            assert guarded.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_overload_answers_429_with_retry_after_not_a_hang(served):
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import SamplingParams

    engine, metrics = _engine(*served, max_batch_size=1, max_queue=1)
    try:
        with TestClient(create_app(engine, None, metrics=metrics)) as client:
            # Deterministic: the engine is not started, one request fills the queue.
            done = threading.Event()
            engine.submit_generation(PROMPT, None, SamplingParams(max_tokens=2), lambda e: e.finished and done.set())
            refused = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert error_of(refused)["type"] == "rate_limit_error"
            assert client.post("/v1/classify", json={"model": "cls-lora", "input": "x"}).status_code == 429
            engine.start()
            assert done.wait(30)
            assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200
            # A flood: one row decodes, one waits, the rest are refused at once.
            body = {"prompt": PROMPT, "max_tokens": 200}

            def post(_):
                started = time.perf_counter()
                response = client.post("/v1/completions", json=body)
                return response.status_code, response.headers.get("retry-after"), time.perf_counter() - started

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(post, range(8)))
            statuses = [s for s, _, _ in results]
            assert set(statuses) <= {200, 429} and statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
            assert all(retry for s, retry, _ in results if s == 429)
            refused_times = [t for s, _, t in results if s == 429]
            assert max(refused_times) < 5  # refused promptly, not after waiting in line
            counted = 'lmtune_requests_total{adapter="base",route="/v1/completions",status="429"}'
            assert counted in client.get("/metrics").text
    finally:
        engine.shutdown()


def test_metrics_count_requests_tokens_batches_and_latency(client):
    client.post("/v1/completions", json={"model": "gen-lora", "prompt": PROMPT, "max_tokens": 3})
    client.post("/v1/completions", json={"model": "gen-lorra", "prompt": PROMPT})
    text = client.get("/metrics").text
    for needle in (
        'lmtune_requests_total{adapter="gen-lora",route="/v1/completions",status="200"}',
        'lmtune_requests_total{adapter="none",route="/v1/completions",status="404"}',
        'lmtune_generation_tokens_total{adapter="gen-lora"}',
        'lmtune_prompt_tokens_total{adapter="gen-lora"}',
        "lmtune_batch_size_bucket",
        "lmtune_queue_depth",
        'lmtune_request_latency_seconds_bucket{le="0.5",route="/v1/completions"}',
        'lmtune_time_to_first_token_seconds_count{route="/v1/completions"}',
        "lmtune_adapters_registered 3.0",
        "lmtune_requests_in_flight",
    ):
        assert needle in text, needle
    steps = [line for line in text.splitlines() if line.startswith("lmtune_engine_steps_total")]
    assert steps and float(steps[0].split()[-1]) > 0


# ---- a real uvicorn on loopback -------------------------------------------------------------------------------


def test_real_server_concurrent_clients_with_different_adapters(server, engine):
    from lmtune.serve.client import LmtuneClient, ServerError

    with pytest.raises(ServerError) as missing:
        LmtuneClient(server).models()
    assert missing.value.status == 401 and "API key" in missing.value.message
    jobs = [(f"copy {w} {i}", adapter) for i, w in enumerate(WORDS[:3]) for adapter in ("gen-lora", "gen-prompt", None)]

    def ask(job):
        prompt, adapter = job
        with LmtuneClient(server, api_key=API_KEY) as client:
            if adapter == "gen-prompt":
                return "".join(client.stream(prompt, adapter, max_tokens=12))
            return client.complete(prompt, adapter, max_tokens=12)

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    assert answers == [alone(engine, p, a, max_tokens=12) for p, a in jobs]
    with LmtuneClient(server, api_key=API_KEY) as client:
        labels = client.classify(["great", "awful"], "cls-lora")
        assert [r["label"] for r in labels] == [r["label"] for r in engine.classify(["great", "awful"], "cls-lora")]
        assert client.chat([{"role": "user", "content": PROMPT}], "gen-lora", max_tokens=4) is not None
        assert {m["id"] for m in client.models()} >= {"gen-lora", "gen-prompt", "cls-lora"}
        with pytest.raises(ServerError, match="Did you mean .gen-lora."):
            client.complete(PROMPT, "gen-lorra")


def test_real_server_load_and_unload_while_a_request_streams(server, engine):
    import httpx

    from lmtune.serve.client import LmtuneClient, ServerError

    client = LmtuneClient(server, api_key=API_KEY)
    info = client.load_adapter("extra", "gen-lora")
    assert info["kind"] == "weight_delta" and "extra" in {m["id"] for m in client.models()}
    expected = alone(engine, PROMPT, "extra", max_tokens=150)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "extra", "prompt": PROMPT, "max_tokens": 150, "stream": True}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as http, \
            http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        # mid-stream: load another adapter, use it, and unload the one this stream uses
        client.load_adapter("extra-2", "gen-prompt")
        assert client.complete(PROMPT, "extra-2", max_tokens=3) == alone(engine, PROMPT, "gen-prompt", max_tokens=3)
        client.unload_adapter("extra")
        chunks = sse_chunks([first, *lines])
    assert chunks[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1] if c["choices"]) == expected
    with pytest.raises(ServerError) as gone:
        client.complete(PROMPT, "extra", max_tokens=2)
    assert gone.value.status == 404
    client.unload_adapter("extra-2")
    with pytest.raises(ServerError) as twice:
        client.unload_adapter("extra-2")
    assert twice.value.status == 404
    client.close()


def test_real_server_cancels_the_request_of_a_client_that_hangs_up(server, engine, monkeypatch):
    import httpx

    from lmtune.serve.client import LmtuneClient

    cancelled = threading.Event()
    cancel = engine.cancel
    monkeypatch.setattr(engine, "cancel", lambda request_id: (cancelled.set(), cancel(request_id)))
    body = {"prompt": PROMPT, "max_tokens": 200, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as http, \
            http.stream("POST", "/v1/completions", json=body) as response:
        next(response.iter_lines())
    assert cancelled.wait(10), "the engine was not told to stop generating for a client that left"
    with LmtuneClient(server, api_key=API_KEY) as client:
        assert isinstance(client.complete(PROMPT, "gen-lora", max_tokens=3), str)
        assert client.health()["status"] == "ok"


# ---- the command line ---------------------------------------------------------------------------------------


def test_serve_arguments_and_api_keys_from_env(monkeypatch):
    import argparse

    from lmtune.serve import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--adapters", "runs", "--api-key", "a", "--api-key", "b", "--port", "9001"])
    assert args.base == "smollm2" and args.host == "127.0.0.1" and args.port == 9001 and args.adapters == "runs"
    monkeypatch.setenv("LMTUNE_API_KEYS", "c, a,")
    assert cli.api_keys(args) == ["a", "b", "c"]
    monkeypatch.delenv("LMTUNE_API_KEYS")
    assert cli.api_keys(parser.parse_args([])) == []
    with pytest.raises(LmtuneError):
        args = parser.parse_args(["--max-queue", "0"])
        cli.run(args)
