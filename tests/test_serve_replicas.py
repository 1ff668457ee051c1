"""`lmtune serve --replicas 2` on loopback: two engines as Ray Serve replicas behind Ray's HTTP proxy and the
router (serve/cluster.py). Four adapters of four kinds, several requests each through the `openai` client: every
adapter is always answered by the replica that loaded it (the `x-lmtune-replica` header), both replicas are used,
and the greedy texts equal the single-process server's. One Ray for the module, shut down after it."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="--replicas needs Ray Serve: pip install -e '.[cluster]'")
import httpx  # noqa: E402
import openai  # noqa: E402
import psutil  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from lmtune.errors import LmtuneError  # noqa: E402
from lmtune.serve.config import ClusterConfig, EngineConfig  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"

ADAPTERS = ("lora", "prompt", "prefix", "ia3")
PROMPTS = ("copy red 3", "copy big 7", "copy old 1")
API_KEY = "replica-key"
HEARD_S = 0.5
"""A replica tells Ray which adapters it holds every 0.1 s, through the controller to the router: time enough for
that, between the first requests of two adapters, so the router's "fewest adapters" choice spreads them."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(tiny Llama folder, adapter root): four PEFT adapters with random (non-zero) weights, one per kind."""
    import torch
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lmtune.models.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("replicas")
    model = build_tiny_model("llama", folder / "llama", ["copy red big old 3 7 1", "the answer is 0 1 2 3 4 5 6 7 8 9"])
    configs = {
        "lora": LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                           init_lora_weights=False),
        "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
        "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        "ia3": IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                         feedforward_modules=["down_proj"], init_ia3_weights=False),
    }
    for seed, (name, config) in enumerate(configs.items()):
        torch.manual_seed(seed)
        get_peft_model(AutoModelForCausalLM.from_pretrained(model), config).save_pretrained(folder / "runs" / name)
    return model, folder / "runs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def replicas(served):
    """Base URL of two replicas behind Ray's proxy, API key on."""
    from lmtune.serve import cluster

    model, root = served
    port = _free_port()
    cfg = ClusterConfig(replicas=2, base=str(model), adapters=str(root), threads=1, api_keys=[API_KEY],
                        engine=EngineConfig(max_batch_size=8, dtype="float32"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster.start_local(cfg, "127.0.0.1", port)
    # Ray's processes (GCS, raylet, agents, the replicas' workers) descend from this one; others' Rays do not.
    ours = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert any("raylet" in p.name() for p in ours) and len(ours) >= 5, [p.name() for p in ours]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cluster.stop_local()
    deadline = time.monotonic() + 30
    while any(p.is_running() for p in ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [f"{p.pid} {p.name()}" for p in ours if p.is_running()]
    assert left == [], f"Ray processes were left behind: {left}"


def _requests() -> list[tuple[str, str]]:
    return [(adapter, prompt) for prompt in PROMPTS for adapter in ADAPTERS]


def test_each_adapter_stays_on_the_replica_that_loaded_it_and_answers_as_one_server(served, replicas):
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine

    model, root = served
    answered: dict[str, set[str]] = {a: set() for a in ADAPTERS}
    texts = {}
    with openai.OpenAI(base_url=f"{replicas}/v1", api_key=API_KEY, max_retries=0) as client:
        for adapter, prompt in _requests():
            raw = client.completions.with_raw_response.create(model=adapter, prompt=prompt, max_tokens=6,
                                                              temperature=0)
            answered[adapter].add(raw.headers["x-lmtune-replica"])
            texts[adapter, prompt] = raw.parse().choices[0].text
            if prompt == PROMPTS[0] and adapter != ADAPTERS[-1]:
                time.sleep(HEARD_S)
    assert all(len(names) == 1 for names in answered.values()), answered
    assert len(set().union(*answered.values())) == 2, f"one replica served every adapter: {answered}"
    holds = {}  # replica -> what its /health says it holds (un-pinned requests reach either)
    for _ in range(40):
        health = httpx.get(f"{replicas}/health")
        holds[health.headers["x-lmtune-replica"]] = set(health.json()["adapters_loaded"])
        if len(holds) == 2:
            break
    for adapter, (replica,) in answered.items():
        assert adapter in holds[replica] and all(adapter not in held for r, held in holds.items() if r != replica)

    engine = Engine(str(model), root, EngineConfig(max_batch_size=8, dtype="float32"), num_threads=1)
    engine.start()
    try:
        with TestClient(create_app(engine)) as http:
            single = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)
            expected = {(a, p): single.completions.create(model=a, prompt=p, max_tokens=6, temperature=0)
                        .choices[0].text for a, p in _requests()}
    finally:
        engine.shutdown()
    assert texts == expected
    assert len(set(texts.values())) > 1, "every adapter wrote the same text: the test would prove nothing"


def test_the_router_checks_the_key_streams_and_refuses_run_time_loading(replicas):
    assert httpx.post(f"{replicas}/v1/completions", json={"model": "lora", "prompt": "copy red 3"}).status_code == 401
    assert httpx.get(f"{replicas}/health").json()["status"] == "ok"
    with openai.OpenAI(base_url=f"{replicas}/v1", api_key=API_KEY, max_retries=0) as client:
        pieces = [c.choices[0].text for c in client.completions.create(model="prefix", prompt="copy red 3",
                                                                       max_tokens=6, temperature=0, stream=True)]
        whole = client.completions.create(model="prefix", prompt="copy red 3", max_tokens=6, temperature=0)
        assert "".join(pieces) == whole.choices[0].text
        with pytest.raises(openai.NotFoundError, match="unknown model"):
            client.completions.create(model="nope", prompt="copy red 3", max_tokens=2)
    refused = httpx.post(f"{replicas}/v1/adapters", json={"name": "x", "path": "lora"},
                         headers={"Authorization": f"Bearer {API_KEY}"})
    assert refused.status_code == 501 and "adapter root" in refused.json()["error"]["message"]


def test_a_second_ray_start_is_a_clear_error(served, replicas):
    from lmtune.serve import cluster

    model, root = served
    with pytest.raises(LmtuneError, match="needs a local Ray, which did not start"):
        cluster.start_local(ClusterConfig(replicas=2, base=str(model), adapters=str(root)), "127.0.0.1", _free_port())
    assert httpx.get(f"{replicas}/health").status_code == 200  # the running one is untouched


def test_the_documented_cluster_config_builds_the_application():
    """The YAML in docs/serve.md is a valid Serve config (Ray's own schema) whose args build the application."""
    import yaml
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from lmtune.serve.cluster import app_builder

    block = re.search(r"```yaml\n(# lmtune-serve.yaml.*?)```", DOCS.read_text(), re.S).group(1)
    (app,) = ServeDeploySchema.model_validate(yaml.safe_load(block)).applications
    module, name = app.import_path.split(":")
    assert (module, name) == ("lmtune.serve.cluster", "app_builder")
    assert isinstance(app_builder(app.args), serve.Application)
    with pytest.raises(ValueError, match="max_batch"):
        app_builder({**app.args, "engine": {"max_batch": 4}})

