"""LangChain's `ChatOpenAI` and `OpenAIEmbeddings` against a real uvicorn on loopback, each request naming an adapter:
`invoke` gives the official `openai` client's text, `stream` joins to it, `with_structured_output` (LangChain 1.x's
default for ChatOpenAI: `json_schema` through `response_format`) returns an instance of the pydantic schema, and
function calling is refused with a 400 that names `tools`. Whatever fields LangChain sends by default must be accepted.

The base: a tiny random Llama with a byte-level BPE tokenizer and a chat template (conftest.build_bpe_llama); the
adapters are PEFT's own, saved with random weights (a LoRA and a prompt tuning), so each answers its own way."""

from __future__ import annotations

import json
from typing import Literal

import pytest

pytest.importorskip("xgrammar")
openai = pytest.importorskip("openai")
langchain_openai = pytest.importorskip("langchain_openai")

from pydantic import BaseModel  # noqa: E402

from conftest import build_bpe_llama  # noqa: E402
from lmtune.serve.engine import Engine, EngineConfig  # noqa: E402
from test_serve_http import API_KEY, loopback  # noqa: E402

# `<s>` opens a turn and `</s>` (the end of sequence) closes it, so a reply ends where a turn would.
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
QUESTION = "pick a colour and a number"
ADAPTERS = ["chat-lora", "chat-prompt"]


class Pick(BaseModel):
    """Enumerated fields: constrained decoding closes the object after a few tokens, even on a random model."""

    colour: Literal["red", "blue", "green"]
    n: Literal[1, 2, 3]


def _peft_adapters(base, root) -> None:
    """A LoRA (every weight random, so it changes the output) and a prompt tuning, saved by PEFT itself."""
    import torch
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for name, config in [("chat-lora", LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                                   task_type="CAUSAL_LM")),
                         ("chat-prompt", PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"))]:
        torch.manual_seed(1)
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(root / name)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(engine, base URL of a real uvicorn with API keys on)."""
    from lmtune.serve.app import create_app

    folder = tmp_path_factory.mktemp("langchain")
    texts = [json.dumps(Pick(colour=c, n=n).model_dump(), separators=(",", ":")) for c in ("red", "blue", "green")
             for n in (1, 2, 3)]
    texts += [CHAT_TEMPLATE, QUESTION, "user system assistant red blue green one two three"]
    base = build_bpe_llama(folder / "base", texts, CHAT_TEMPLATE)
    _peft_adapters(base, folder / "runs")
    engine = Engine(str(base), folder / "runs", EngineConfig(max_batch_size=8, dtype="float32"), num_threads=1)
    engine.start()
    with loopback(create_app(engine, [API_KEY])) as url:
        yield engine, url
    engine.shutdown()


def _chat(url: str, adapter: str, **options):
    return langchain_openai.ChatOpenAI(model=adapter, base_url=f"{url}/v1", api_key=API_KEY, max_retries=0,
                                       **{"temperature": 0, "max_tokens": 12, **options})


def _logprobs(content) -> list[float]:
    return [t["logprob"] if isinstance(t, dict) else t.logprob for t in content]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_invoke_and_stream_give_the_openai_clients_text(served, adapter):
    _, url = served
    messages = [{"role": "user", "content": QUESTION}]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as oai:
        want, base = (oai.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12,
                                                  logprobs=True).choices[0] for model in (adapter, None))
    text, scores = want.message.content, _logprobs(want.logprobs.content)
    # a random prompt tuning may keep the base's greedy text; its log-probabilities still tell it apart
    assert text and max(abs(a - b) for a, b in zip(scores, _logprobs(base.logprobs.content))) > 1e-3
    reply = _chat(url, adapter, logprobs=True).invoke(QUESTION)
    assert reply.content == text and reply.response_metadata["model_name"] == adapter
    assert _logprobs(reply.response_metadata["logprobs"]["content"]) == pytest.approx(scores, abs=1e-5)
    assert reply.usage_metadata["output_tokens"] == len(scores)
    chunks = list(_chat(url, adapter, stream_usage=True).stream(QUESTION))  # sends stream_options.include_usage
    assert len(chunks) > 2 and "".join(chunk.content for chunk in chunks) == text
    assert sum(chunk.usage_metadata["output_tokens"] for chunk in chunks if chunk.usage_metadata) == len(scores)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_with_structured_output_returns_the_schema(served, adapter):
    _, url = served
    llm = _chat(url, adapter, max_tokens=40)
    picked = llm.with_structured_output(Pick).invoke(QUESTION)  # LangChain 1.x: method="json_schema"
    assert isinstance(picked, Pick)
    raw = llm.with_structured_output(Pick, method="json_schema", include_raw=True).invoke(QUESTION)
    assert raw["parsing_error"] is None and raw["parsed"] == picked
    assert Pick.model_validate_json(raw["raw"].content) == picked
    # function calling sends tools, tool_choice and parallel_tool_calls: the refusal names the root, `tools`
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported: .*no tool support") as refused:
        llm.with_structured_output(Pick, method="function_calling").invoke(QUESTION)
    assert refused.value.status_code == 400 and refused.value.body["param"] == "tools"


def test_openai_embeddings_equal_the_openai_clients(served):
    """LangChain's default tokenises with tiktoken and sends OpenAI's token ids, which mean nothing to this
    tokenizer; `check_embedding_ctx_length=False` sends the texts, and `tiktoken_enabled=False` with the base's
    folder tokenises with its own tokenizer and sends the chunks' text."""
    engine, url = served
    texts = [QUESTION, "red blue green"]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as oai:
        want = [d.embedding for d in oai.embeddings.create(model="chat-lora", input=texts).data]
        base = [d.embedding for d in oai.embeddings.create(model=None, input=texts).data]
    assert want != base
    options = {"model": "chat-lora", "base_url": f"{url}/v1", "api_key": API_KEY, "max_retries": 0}
    plain = langchain_openai.OpenAIEmbeddings(check_embedding_ctx_length=False, **options)
    assert plain.embed_documents(texts) == want and plain.embed_query(texts[0]) == want[0]
    own = langchain_openai.OpenAIEmbeddings(tiktoken_enabled=False, tiktoken_model_name=str(engine.base_path),
                                            **options)
    assert own.embed_documents(texts) == want  # one chunk per text: LangChain returns it as it came
