"""Issue 14, server cases 1-7: nothing a careless or hostile client sends hangs the server or disturbs another
user's request. Each case goes through a real uvicorn on loopback while a good stream runs beside the bad request;
the stream must finish with exactly the text the engine gives that request alone."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import threading
import time

import httpx
import pytest
import torch

from test_serve_http import PROMPT, _engine, alone, served, sse_chunks  # noqa: F401  (served: fixture)

KEY = "hostile-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 2**20


@contextlib.contextmanager
def uvicorn_on_loopback(app):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def engine(served):  # noqa: F811
    engine, _ = _engine(*served, max_batch_size=4, max_queue=64, max_classify_inputs=16)
    engine.start()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def url(engine):
    from lmtune.serve.app import create_app

    with uvicorn_on_loopback(create_app(engine, [KEY], max_body_bytes=MAX_BODY)) as base:
        yield base


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        yield client


GOOD = {"model": "gen-lora", "prompt": PROMPT, "max_tokens": 120, "stream": True}


@contextlib.contextmanager
def good_stream_beside(url, engine):
    """A good stream that is already decoding when the block runs, and must end unchanged after it."""
    expected = alone(engine, PROMPT, "gen-lora", max_tokens=120)
    started, result = threading.Event(), {}

    def run():
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client, \
                client.stream("POST", "/v1/completions", json=GOOD) as response:
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                started.set()
            result["chunks"] = sse_chunks(lines)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(30)
    yield
    thread.join(timeout=60)
    chunks = result["chunks"]
    assert chunks[-1] == "[DONE]" and not any("error" in c for c in chunks[:-1]), chunks[-3:]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1] if c["choices"]) == expected


def message(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["message"]


def completion(http, **body):
    return http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, **body})


# ---- case 1: a lone surrogate in a classify text ----------------------------------------------------------------


def test_case1_lone_surrogate_is_refused_and_the_engine_lives_on(url, http, engine):
    with good_stream_beside(url, engine):
        for route, body in (("/v1/classify", {"model": "cls-lora", "input": "hi \ud800"}),
                            ("/v1/classify", {"model": "cls-lora", "input": ["fine", "x\udfff"]}),
                            ("/v1/completions", {"prompt": "copy \ud800"}),
                            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]})):
            raw = json.dumps(body).encode()  # ASCII JSON: the lone surrogate travels as the escape \ud800
            response = http.post(route, content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 400 and "surrogate" in message(response), (body, response.text)
        empty = http.post("/v1/classify", json={"model": "cls-lora", "input": [""]})
        assert empty.status_code == 400 and "empty" in message(empty)
    assert http.get("/health").json()["status"] == "ok"
    classified = http.post("/v1/classify", json={"model": "cls-lora", "input": ["great"]})
    assert classified.status_code == 200 and classified.json()["data"][0]["label"] in ("pos", "neg")
    assert completion(http).status_code == 200


# ---- case 2: bad numbers and a failing step fail only their own row ----------------------------------------------


def test_case2_bad_tokens_and_numbers_fail_alone(url, http, engine):
    greedy = alone(engine, PROMPT, None, max_tokens=4)
    with good_stream_beside(url, engine):
        for body, needle in (({"prompt": [999999999]}, "vocabulary"), ({"prompt": [-5]}, "vocabulary"),
                             ({"seed": 2**64, "temperature": 1}, "seed"), ({"seed": -1, "temperature": 1}, "seed")):
            response = completion(http, **body)
            assert response.status_code == 400 and needle in message(response), (body, response.text)
        tiny_t = completion(http, temperature=5e-324)
        assert tiny_t.status_code == 200 and tiny_t.json()["choices"][0]["text"] == greedy  # that close to 0 is greedy
        tiny_p = completion(http, temperature=1, top_p=1e-300, seed=3)  # the most likely token, every step
        assert tiny_p.status_code == 200 and tiny_p.json()["choices"][0]["text"] == greedy


def _exploding_copy(engine, name: str, when) -> None:
    """Serve gen-lora again as `name`, whose delta raises inside the forward pass whenever `when(x)`."""
    engine.store.register(name, "gen-lora")
    adapter = engine.store.get(name)
    part_class = type(adapter.body)

    def apply(cls, stacked, x, out):
        if when(x):
            raise RuntimeError(f"{name} exploded")
        return part_class.apply.__func__(cls, stacked, x, out)

    adapter.body.__class__ = type("Exploding", (part_class,), {"apply": classmethod(apply)})


@pytest.mark.parametrize("where", ["prefill", "decode"])
def test_case2_an_error_inside_a_batched_step_fails_only_its_row(url, http, engine, where):
    name = f"explodes-in-{where}"
    _exploding_copy(engine, name, (lambda x: x.size(1) > 1) if where == "prefill" else (lambda x: x.size(1) == 1))
    with good_stream_beside(url, engine):
        response = completion(http, model=name, max_tokens=20)
        assert response.status_code == 500 and f"{name} exploded" in message(response)
    engine.store.unregister(name)


def test_case2_an_adapter_with_nan_weights_is_refused_at_load(url, http, engine, served):  # noqa: F811
    from safetensors.torch import load_file, save_file

    root = served[1]
    folder = _copy_adapter(root, "gen-lora", "nan-lora")
    tensors = load_file(folder / "adapter_model.safetensors")
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, folder / "adapter_model.safetensors")
    with good_stream_beside(url, engine):
        response = http.post("/v1/adapters", json={"name": "nan-lora", "path": "nan-lora"})
        assert response.status_code == 400 and "NaN" in message(response)


# ---- case 3: classification inputs are limited and go a batch at a time -----------------------------------------


def test_case3_classify_is_limited_and_split_into_batches(url, http, engine, monkeypatch):
    from lmtune.serve.mixed import BatchPlan

    passes = []
    forward = engine.text_hidden_states  # one call per classification pass (serve/classify.py: classify_rows)
    monkeypatch.setattr(engine, "text_hidden_states", lambda rows, *a, **k: (passes.append(len(rows)), forward(rows, *a, **k))[1])
    texts = [f"great item {i}" if i % 2 else f"awful item {i}" for i in range(16)]
    with good_stream_beside(url, engine):
        too_many = http.post("/v1/classify", json={"model": "cls-lora", "input": texts + ["one more"]})
        assert too_many.status_code == 400 and "at most 16" in message(too_many)
        response = http.post("/v1/classify", json={"model": "cls-lora", "input": texts})
    assert response.status_code == 200
    assert passes and max(passes) <= engine.cfg.max_batch_size and sum(passes) >= 16, passes
    one_by_one = [engine.classify([text], "cls-lora")[0]["label"] for text in texts]
    assert [row["label"] for row in response.json()["data"]] == one_by_one
    # Rows of one adapter share one stacked copy of its weights.
    adapter = engine.adapter("gen-lora")
    module = adapter.body.module_names()[0]
    group = BatchPlan([adapter] * 8).groups(module, torch.device("cpu"))[0]
    assert group[2].stacked[0].size(0) == 1


# ---- case 4: the key before the body, body and prompt limits ------------------------------------------------------


def _lazy_body(total: int, sent: list):
    chunk = b"x" * 2**16
    for _ in range(total // len(chunk)):
        sent[0] += len(chunk)
        yield chunk


class _Counting:
    """The engine's tokenizer, noting the length of every text it is asked to tokenise."""

    def __init__(self, tokenizer, seen: list):
        self._tokenizer, self._seen = tokenizer, seen

    def __call__(self, text, **options):
        self._seen.append(len(text))
        return self._tokenizer(text, **options)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_case4_key_checked_before_the_body_and_sizes_limited(url, engine, monkeypatch):
    with good_stream_beside(url, engine), httpx.Client(base_url=url, timeout=30) as anonymous:
        sent = [0]
        response = anonymous.post("/v1/completions", content=_lazy_body(200 * 2**20, sent),
                                  headers={"Content-Length": str(200 * 2**20), "Content-Type": "application/json"})
        assert response.status_code == 401 and sent[0] < 32 * 2**20, sent  # answered, body unread
        sent = [0]
        declared = anonymous.post("/v1/completions", content=_lazy_body(4 * MAX_BODY, sent),
                                  headers={**HEADERS, "Content-Length": str(4 * MAX_BODY)})
        assert declared.status_code == 413 and "limit" in message(declared)
        chunked = anonymous.post("/v1/completions", content=_lazy_body(4 * MAX_BODY, [0]), headers=HEADERS)
        assert chunked.status_code == 413 and "--max-body-mb" in message(chunked)

        seen = []
        monkeypatch.setattr(engine, "tokenizer", _Counting(engine.tokenizer, seen))
        huge = anonymous.post("/v1/completions", json={"prompt": "red " * 200_000}, headers=HEADERS)
        assert huge.status_code == 400 and "shorten" in message(huge)
        assert not any(length > 100_000 for length in seen), "the huge prompt was tokenised"


# ---- case 5: a non-streaming client that hangs up ----------------------------------------------------------------


def test_case5_a_non_streaming_client_that_hangs_up_cancels_its_generation(url, engine, monkeypatch):
    cancelled = threading.Event()
    cancel, forward = engine.cancel, engine.model.forward
    monkeypatch.setattr(engine, "cancel", lambda request_id: (cancelled.set(), cancel(request_id)))
    monkeypatch.setattr(engine.model, "forward", lambda *a, **k: (time.sleep(0.02), forward(*a, **k))[1])
    with httpx.Client(base_url=url, headers=HEADERS, timeout=httpx.Timeout(30, read=0.5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 250})
    assert cancelled.wait(5), "the generation went on after its client left"
    deadline = time.time() + 5
    while engine._running is not None and time.time() < deadline:
        time.sleep(0.05)
    assert engine._running is None


# ---- case 6: broken adapter files --------------------------------------------------------------------------------


def _copy_adapter(root, source: str, name: str):
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(root / source, folder)
    return folder


def test_case6_broken_adapters_answer_400_with_the_cause(url, http, engine, served):  # noqa: F811
    root = served[1]
    weights = "adapter_model.safetensors"
    breakers = {
        "broken-pickle": (weights, lambda path: torch.save({"w": torch.ones(2)}, path), "safetensors"),
        "broken-truncated": (weights, lambda path: path.write_bytes(path.read_bytes()[:40]), "safetensors"),
        "broken-header": (weights, lambda path: path.write_bytes(struct.pack("<Q", 2**40) + b"{}"), "safetensors"),
        "broken-config": ("adapter_config.json", lambda path: path.write_text("[1, 2]"), "JSON object"),
    }
    for name, (file, breaker, _) in breakers.items():
        breaker(_copy_adapter(root, "gen-lora", name) / file)
    engine.store.scan()  # the broken folders are served by name, read on first use
    with good_stream_beside(url, engine):
        for name, (_, _, needle) in breakers.items():
            loaded = http.post("/v1/adapters", json={"name": f"{name}-2", "path": name})
            used = completion(http, model=name)
            for response in (loaded, used):
                assert response.status_code == 400, (name, response.text)
                assert needle in message(response) and str(root) not in message(response), (name, response.text)


# ---- case 7: links out of the root, the docs behind the key, relative paths --------------------------------------


def test_case7_links_out_of_the_root_docs_and_relative_paths(url, http, engine, served, tmp_path):  # noqa: F811
    root = served[1]
    outside = shutil.copytree(root / "gen-lora", tmp_path / "outside")
    linked = root / "linked"
    shutil.rmtree(linked, ignore_errors=True)
    linked.mkdir()
    for file in outside.iterdir():
        (linked / file.name).symlink_to(file)
    engine.store.scan()
    with good_stream_beside(url, engine):
        loaded = http.post("/v1/adapters", json={"name": "linked-2", "path": "linked"})
        assert loaded.status_code == 400 and "outside the adapter root" in message(loaded)
        used = completion(http, model="linked")
        assert used.status_code == 400 and "outside the adapter root" in message(used)
        away = http.post("/v1/adapters", json={"name": "away", "path": str(tmp_path)})
        assert away.status_code == 400 and str(root) not in message(away)
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            for path in ("/docs", "/openapi.json"):
                assert anonymous.get(path).status_code == 401
                assert anonymous.get(path, headers=HEADERS).status_code == 200
        listing = http.get("/v1/models").json()["data"]
    text = json.dumps(listing)
    assert str(root) not in text and str(served[0]) not in text.replace(json.dumps(engine.base_name)[1:-1], "")
    gen = next(m for m in listing if m["id"] == "gen-lora")
    assert gen["root"] == "gen-lora" and gen["parent"] == engine.base_name


# ---- the scheduler never dies silently (watchdog) ----------------------------------------------------------------


class _Killed(BaseException):
    """Not an Exception: what no handler in a step catches (as a KeyboardInterrupt or a C-level abort would)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death it causes
def test_watchdog_the_scheduler_survives_a_bug_and_reports_its_death(served):  # noqa: F811
    from lmtune.serve.app import create_app

    engine, metrics = _engine(*served, max_batch_size=4)
    engine.start()
    step = engine._generation_step
    faults: list[BaseException] = []

    def faulty():
        if faults:
            raise faults.pop()
        step()

    engine._generation_step = faulty
    try:
        with uvicorn_on_loopback(create_app(engine, [KEY], metrics=metrics)) as base, \
                httpx.Client(base_url=base, headers=HEADERS, timeout=20) as client:
            faults.append(RuntimeError("a bug in the scheduler"))
            first = completion(client)
            assert first.status_code == 500 and "a bug in the scheduler" in message(first)
            assert completion(client).status_code == 200 and client.get("/health").status_code == 200
            faults.append(_Killed("the thread is gone"))
            dying = completion(client)  # answered, not left waiting for a dead thread
            assert dying.status_code == 500 and "the thread is gone" in message(dying)
            health = client.get("/health")
            assert health.status_code == 503 and "scheduler thread died" in health.json()["error"]
            refused = completion(client)
            assert refused.status_code == 503 and "stopped" in message(refused)
    finally:
        engine.shutdown()
