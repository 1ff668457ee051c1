"""`/v1/embeddings`: the base model's and each adapter's own embeddings, pooled as documented, through the official
`openai` client (base64, its default) and plain JSON; checked against the trained models' own forward passes."""

from __future__ import annotations

import pytest
import torch

openai = pytest.importorskip("openai")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import tiny_raw_config  # noqa: E402
from lmtune.serve.engine import Engine, EngineConfig  # noqa: E402

TEXTS = ["great product it was", "awful broken item", "the a this"]


@pytest.fixture(scope="module")
def served(tiny_models, toy_data, tmp_path_factory):
    from lmtune.runconfig import resolve_config
    from lmtune.train import train

    root = tmp_path_factory.mktemp("embed-runs")
    raw = tiny_raw_config(tiny_models["bert"], toy_data, root, {"name": "lora", "rank": 4}, max_steps=3,
                          learning_rate=5e-2, eval_every="no", warmup_ratio=0.0)
    raw["output"]["name"] = "cls-lora"
    train(resolve_config(raw))
    engine = Engine(str(tiny_models["bert"]), root, EngineConfig(max_batch_size=2), num_threads=1)
    engine.start()
    with TestClient(__import__("lmtune.serve.app", fromlist=["create_app"]).create_app(engine)) as http:
        yield engine, root, http
    engine.shutdown()


def _pooled(body, tokenizer, text: str, mode: str) -> torch.Tensor:
    """By hand: the body's last hidden states over the text, mean or [CLS] or last token."""
    inputs = tokenizer(text, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        hidden = body(**inputs).last_hidden_state[0]
    return {"mean": hidden.mean(0), "cls": hidden[0], "last": hidden[-1]}[mode]


def test_base_and_adapter_embeddings_equal_their_own_forward(served, tiny_models):
    from transformers import AutoModel

    from lmtune.train.artifacts import load_run

    engine, root, http = served
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)
    base = oai.embeddings.create(model=engine.base_name, input=TEXTS)  # base64 on the wire, floats here
    plain = http.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "float"}).json()
    assert [d.index for d in base.data] == [0, 1, 2] and plain["usage"]["prompt_tokens"] > 0
    reference = AutoModel.from_pretrained(tiny_models["bert"]).eval()
    for text, got, floats in zip(TEXTS, base.data, plain["data"]):
        want = _pooled(reference, engine.tokenizer, text, engine.pooling)
        torch.testing.assert_close(torch.tensor(got.embedding), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.tensor(floats["embedding"]), want, atol=1e-5, rtol=1e-4)
    tuned = oai.embeddings.create(model="cls-lora", input=TEXTS[:2])
    run = load_run(root / "cls-lora").model
    for text, got in zip(TEXTS, tuned.data):
        want = _pooled(run.body, engine.tokenizer, text, engine.adapter("cls-lora").head.pooling)
        torch.testing.assert_close(torch.tensor(got.embedding), want, atol=1e-5, rtol=1e-4)
        assert (torch.tensor(got.embedding) - torch.tensor(base.data[TEXTS.index(text)].embedding)).abs().max() > 1e-4
    refused = http.post("/v1/embeddings", json={"input": "x", "dimensions": 8})
    assert refused.status_code == 400 and "dimensions" in refused.json()["error"]["message"]


def test_a_decoder_embeds_by_its_last_token(tiny_models):
    from transformers import AutoModelForCausalLM

    engine = Engine(str(tiny_models["llama"]), None, EngineConfig(), num_threads=1)
    engine.start()
    try:
        assert engine.pooling == "last"
        with TestClient(__import__("lmtune.serve.app", fromlist=["create_app"]).create_app(engine)) as http:
            out = http.post("/v1/embeddings", json={"input": TEXTS[:2]}).json()
            ids = http.post("/v1/embeddings", json={"input": engine.tokenize(TEXTS[0])}).json()
        assert ids["data"][0]["embedding"] == out["data"][0]["embedding"]  # token ids embed like their text
        body = AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval().model
        for text, row in zip(TEXTS, out["data"]):
            torch.testing.assert_close(torch.tensor(row["embedding"]), _pooled(body, engine.tokenizer, text, "last"),
                                       atol=1e-5, rtol=1e-4)
    finally:
        engine.shutdown()
