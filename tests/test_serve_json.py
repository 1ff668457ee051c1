"""JSON output (`response_format`) by constrained decoding, per row: through the official `openai` client the text
parses and follows its schema; a JSON row and a free-text row share a batch and the free one is unchanged; the
grammar holds back an end of sequence that the request's own logit_bias pushes (so the test could fail).

A tiny random Llama with a byte-level BPE tokenizer (conftest.build_bpe_llama)."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("xgrammar")
openai = pytest.importorskip("openai")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import build_bpe_llama  # noqa: E402
from lmtune.serve.engine import Engine, EngineConfig, SamplingParams  # noqa: E402

SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "blue", "green"]}, "n": {"enum": [1, 2, 3]}},
          "required": ["colour", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    texts = [json.dumps({"colour": c, "n": n}) for c in ("red", "blue", "green") for n in (1, 2, 3)]
    texts += ["copy red 3 the answer is 3", "a lovely film, a waste of time"]
    folder = build_bpe_llama(tmp_path_factory.mktemp("json-llama"), texts)
    engine = Engine(str(folder), None, EngineConfig(max_batch_size=8), num_threads=1)
    engine.start()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def oai(engine):
    from lmtune.serve.app import create_app

    with TestClient(create_app(engine)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)


def test_json_schema_output_parses_and_follows_its_schema(oai):
    out = oai.chat.completions.create(
        model=None, messages=[{"role": "user", "content": "a colour and a number"}], max_tokens=60, n=3,
        temperature=1.0, seed=4, response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": SCHEMA}})
    for choice in out.choices:
        assert choice.finish_reason == "stop", choice
        value = json.loads(choice.message.content)
        assert set(value) == {"colour", "n"} and value["colour"] in ("red", "blue", "green") and value["n"] in (1, 2, 3)
    refused = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError, match="response_format"):
        oai.chat.completions.create(model=None, messages=[{"role": "user", "content": "x"}], response_format=refused)


def test_the_grammar_holds_back_an_end_that_logit_bias_pushes(engine, oai):
    eos = engine.end_ids[0]
    free = oai.completions.create(model=None, prompt="copy red", max_tokens=20, logit_bias={str(eos): 100})
    assert free.choices[0].text == "" and free.choices[0].finish_reason == "stop"  # the bias alone ends at once
    json_schema = {"type": "json_schema", "json_schema": {"name": "pick", "schema": SCHEMA}}
    shaped = oai.completions.create(model=None, prompt="copy red", max_tokens=40, logit_bias={str(eos): 100},
                                    extra_body={"response_format": json_schema})
    assert shaped.choices[0].finish_reason == "stop"
    assert set(json.loads(shaped.choices[0].text)) == {"colour", "n"}
    # any object: a random model may write strings until max_tokens, but never anything but an object's start
    anything = oai.completions.create(model=None, prompt="copy red", max_tokens=30,
                                      extra_body={"response_format": {"type": "json_object"}}).choices[0]
    assert anything.text.startswith("{")
    if anything.finish_reason == "stop":
        assert isinstance(json.loads(anything.text), dict)


def test_a_json_row_and_a_free_row_share_a_batch(engine):
    prompt = "copy red 3"
    alone = engine.generate([prompt], [None], SamplingParams(max_tokens=12))[0]
    texts: dict[str, str] = {"json": "", "free": ""}
    done = threading.Semaphore(0)

    def collect(key):
        def on_event(event):
            texts[key] += event.text
            if event.finished:
                done.release()
        return on_event

    with engine._wake:  # both queued before the scheduler looks: one prefill, one decode batch
        engine.submit_generation(prompt, None, SamplingParams(max_tokens=60, response_format=("json_schema", SCHEMA)),
                                 collect("json"))
        engine.submit_generation(prompt, None, SamplingParams(max_tokens=12), collect("free"))
    assert done.acquire(timeout=60) and done.acquire(timeout=60)
    assert texts["free"] == alone
    assert json.loads(texts["json"])["colour"] in ("red", "blue", "green")
    assert not texts["free"].startswith("{")  # the free row was not constrained: the test tells them apart
