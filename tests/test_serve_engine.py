"""The serving engine: mixed batches of every adapter kind give each row what that adapter gives alone, what the
slow reference gives, and what the trained model gives in `lmtune eval`; PEFT-made adapters match PEFT; the store
refuses what it must. (Classification heads of every strategy: test_strategy_contract.py.)"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM

from conftest import write_jsonl
from lmtune.config.schema import GenerationConfig
from lmtune.device import place, to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.generation import generate_texts
from lmtune.serve.engine import Engine, EngineConfig, Overloaded, SamplingParams
from lmtune.train import train
from lmtune.train.artifacts import load_run
from test_generative import copy_rows, gen_config, gen_models  # noqa: F401  (fixture)

ADAPTERS = {
    "lora": {"name": "lora"},
    "lora-r4": {"name": "lora", "rank": 4, "alpha": 8},
    "bottleneck-series": {"name": "bottleneck"},
    "bottleneck-series-16": {"name": "bottleneck", "bottleneck_size": 16},
    "bottleneck-parallel": {"name": "bottleneck", "kind": "parallel", "non_linearity": "relu"},
    "prompt": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "p-tuning": {"name": "p_tuning", "num_virtual_tokens": 3},
    "prefix": {"name": "prefix_tuning", "num_virtual_tokens": 5},
    "ia3": {"name": "peft", "peft_type": "IA3"},
}
PROMPTS = ["copy red 3", "copy big 7 the answer is", "copy old 1", "copy the the the new 5 blue", "copy 2",
           "copy small 9 green", "copy blue 4", "copy white 8 old", "copy new 6", "copy green old 0", "copy big 5"]


@pytest.fixture(scope="module")
def served(gen_models, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("serve")
    data = {k: write_jsonl(folder / f"{k}.jsonl", copy_rows(n, s)) for k, n, s in
            (("train", 160, 1), ("validation", 16, 2), ("test", 12, 3))}
    root = folder / "adapters"
    for name, method in ADAPTERS.items():
        cfg = gen_config(gen_models["llama"], data, root, method).updated({"output.name": name})
        train(cfg)
    return {"root": root, "model": gen_models["llama"], "data": data,
            "engine": Engine(str(gen_models["llama"]), root, EngineConfig(max_batch_size=4, dtype="float32"))}


def _ids(engine, prompts):
    return [engine.tokenizer(p)["input_ids"] for p in prompts]


def test_the_store_finds_every_run_with_its_kind(served):
    engine = served["engine"]
    assert set(engine.store.names()) == set(ADAPTERS)
    kinds = {a: engine.adapter(a).kind for a in ADAPTERS}
    assert kinds["lora"] == kinds["bottleneck-parallel"] == kinds["ia3"] == "weight_delta"
    assert kinds["prompt"] == kinds["p-tuning"] == "virtual_tokens"
    assert kinds["prefix"] == "kv_prefix"


def test_a_mixed_batch_gives_each_row_its_own_adapter(served):
    engine = served["engine"]
    names = [None, *ADAPTERS]
    ids = _ids(engine, PROMPTS[: len(names)])
    mixed = engine.prefill_logits(ids, names)
    reference = engine.prefill_logits(ids, names, reference=True)
    base = engine.prefill_logits(ids, [None] * len(names))
    for row, name in enumerate(names):
        alone = engine.prefill_logits([ids[row]], [name])[0]
        torch.testing.assert_close(mixed[row], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mixed[row], reference[row], rtol=1e-5, atol=1e-5)
        if name is not None:
            assert (mixed[row] - base[row]).abs().max() > 1e-3, f"{name} changed nothing: the test would prove nothing"


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_served_logits_equal_the_trained_model(served, name):
    engine = served["engine"]
    loaded = load_run(served["root"] / name)
    ids = _ids(engine, PROMPTS[:3])
    served_logits = engine.prefill_logits(ids, [name, None, name])
    for row in (0, 2):
        with torch.no_grad():
            trained = loaded.model.body(input_ids=to_model_device(torch.tensor([ids[row]]), loaded.model)).logits[0, -len(ids[row]):]
        torch.testing.assert_close(served_logits[row], trained, rtol=1e-5, atol=1e-5)


def test_greedy_generation_with_continuous_batching_equals_lmtune_eval(served):
    """Nine requests through four slots: rows join and leave between decode steps."""
    engine = served["engine"]
    names = [*ADAPTERS, None]
    texts = engine.generate(PROMPTS[: len(names)], names, SamplingParams(max_tokens=8))
    for prompt, name, text in zip(PROMPTS, names, texts):
        if name is None:
            continue
        model = load_run(served["root"] / name).model
        assert text.strip() == generate_texts(model, [prompt], GenerationConfig(max_new_tokens=8), progress=False)[0]


def test_a_seed_gives_the_same_sample_whatever_shares_the_batch(served):
    engine = served["engine"]
    params = SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=11)
    crowded = engine.generate(["copy red 3"] * 4, ["lora", None, "prefix", "prompt"], params)
    alone = engine.generate(["copy red 3"], ["lora"], params)
    assert crowded[0] == alone[0]


def test_stop_strings_and_max_tokens_end_a_request(served):
    engine = served["engine"]
    events = []
    done = threading.Event()
    engine.submit_generation("copy red 3", "lora", SamplingParams(max_tokens=5),
                             lambda e: (events.append(e), e.finished and done.set()))
    done.wait(30)
    assert events[-1].finish_reason in ("length", "stop") and events[-1].completion_tokens <= 5
    full = "".join(e.text for e in events)
    if len(full.strip()) > 2:
        stop = full.strip()[1:3]
        text = engine.generate(["copy red 3"], ["lora"], SamplingParams(max_tokens=5, stop=[stop]))[0]
        assert stop not in text and full.startswith(text)


# ---- adapters made by PEFT itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lora", "prompt", "prefix", "ia3"])
def test_peft_made_adapters_give_peft_logits(served, kind):
    """PEFT's own forward is the reference (IA3: random scales on attention outputs and a feed-forward input)."""
    torch.manual_seed(0)
    configs = {
        "ia3": IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                         feedforward_modules=["down_proj"], init_ia3_weights=False),
        "lora": LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                           init_lora_weights=False),
        "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
        "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    }
    peft_model = place(get_peft_model(AutoModelForCausalLM.from_pretrained(served["model"]), configs[kind]).eval())
    peft_model.save_pretrained(served["root"] / f"peft-{kind}")
    engine = served["engine"]
    engine.store.scan()
    ids = _ids(engine, PROMPTS[:2])
    got = engine.prefill_logits(ids, [f"peft-{kind}", "lora"])[0]
    with torch.no_grad():
        expected = peft_model(input_ids=to_model_device(torch.tensor([ids[0]]), peft_model)).logits[0, -len(ids[0]):]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---- the store and bad input --------------------------------------------------------------------------------


def test_paths_outside_the_root_and_unknown_names_are_refused(served, tmp_path):
    store = served["engine"].store
    with pytest.raises(LmtuneError, match="outside the adapter root"):
        store.register("escape", served["root"] / ".." / ".." )
    with pytest.raises(LmtuneError, match="outside the adapter root"):
        store.register("escape", "../serve")
    with pytest.raises(LmtuneError, match="did you mean 'lora'"):
        store.get("lroa")
    with pytest.raises(LmtuneError, match="invalid adapter name"):
        store.register("../x", "lora")


def test_an_adapter_for_another_base_is_refused(served, gen_models, tmp_path):  # noqa: F811
    cfg = gen_config(gen_models["gpt2"], served["data"], served["root"] / "elsewhere", {"name": "lora"}, max_steps=1)
    cfg = cfg.updated({"output.name": "gpt2-lora"})
    train(cfg)
    with pytest.raises(LmtuneError, match="trained on base model"):
        served["engine"].store.register("gpt2-lora", "elsewhere/gpt2-lora")
    config = json.loads((served["root"] / "lora" / "adapter_config.json").read_text())
    peft_dir = served["root"] / "elsewhere" / "peft-copy"
    peft_dir.mkdir()
    (peft_dir / "adapter_config.json").write_text(json.dumps(config))
    (peft_dir / "adapter_model.safetensors").write_bytes((served["root"] / "elsewhere" / "gpt2-lora" / "adapter_model.safetensors").read_bytes())
    with pytest.raises(LmtuneError, match="another base model"):
        served["engine"].store.register("peft-copy", "elsewhere/peft-copy")


def test_least_recently_used_adapters_are_evicted_under_the_budget(served):
    sizes = {name: served["engine"].adapter(name).nbytes() for name in ("prompt", "lora", "prefix")}
    budget = sizes["lora"] + sizes["prefix"]  # the three do not fit; the last two do
    engine = Engine(str(served["model"]), served["root"], EngineConfig(memory_budget_mb=budget / 2**20, dtype="float32"))
    for name in sizes:
        engine.adapter(name)
    assert engine.store.is_loaded("prefix") and engine.store.is_loaded("lora") and not engine.store.is_loaded("prompt")
    assert engine.store.loaded_bytes() <= budget
    assert engine.adapter("prompt").kind == "virtual_tokens"  # reloads on use


def test_bad_requests_fail_alone_with_a_message(served):
    engine = served["engine"]
    with pytest.raises(LmtuneError, match="temperature"):
        engine.submit_generation("copy red 3", None, SamplingParams(temperature=-1), print)
    with pytest.raises(LmtuneError, match="context"):
        engine.submit_generation("copy red 3 " * 100, None, SamplingParams(max_tokens=8), print)
    with pytest.raises(LmtuneError, match="no classification head"):
        engine.classify(["copy"], "lora")
    assert engine.generate(["copy red 3"], ["lora"], SamplingParams(max_tokens=3))  # still serving


def test_a_full_queue_says_overloaded(served):
    engine = Engine(str(served["model"]), served["root"], EngineConfig(max_queue=1, max_batch_size=1, dtype="float32"))
    engine.submit_generation("copy red 3", None, SamplingParams(max_tokens=4), lambda e: None)  # not started: waits
    with pytest.raises(Overloaded) as err:
        engine.submit_generation("copy red 3", None, SamplingParams(max_tokens=4), lambda e: None)
    assert err.value.retry_after > 0
    engine.shutdown()


def test_an_encoder_base_classifies_but_does_not_generate(tiny_models):
    engine = Engine(str(tiny_models["bert"]), cfg=EngineConfig(dtype="float32"))
    with pytest.raises(LmtuneError, match="encoder"):
        engine.submit_generation("great", None, SamplingParams(), print)


def test_listings_tell_kind_and_base_before_loading(served):
    engine = Engine(str(served["model"]), served["root"], EngineConfig(dtype="float32"))
    infos = {info.name: info for info in engine.store.list()}
    assert not infos["prefix"].loaded and infos["prefix"].kind == "kv_prefix"
    assert infos["bottleneck-parallel"].kind == "weight_delta" and infos["lora"].base == str(served["model"])


def test_cancelling_a_waiting_request_and_shutting_down_end_every_request(served):
    engine = Engine(str(served["model"]), served["root"], EngineConfig(max_batch_size=1, dtype="float32"))
    events: dict[str, list] = {}
    ids = [engine.submit_generation("copy red 3", "lora", SamplingParams(max_tokens=50, ignore_eos=True),
                                    lambda e: events.setdefault(e.request_id, []).append(e)) for _ in range(3)]
    engine.cancel(ids[2])  # still waiting: leaves the queue at once
    assert events[ids[2]][-1].finish_reason == "cancelled" and engine.queue_depth() == 2
    engine.start()
    engine.shutdown()
    assert all(events[i][-1].finished for i in ids)


def test_a_cancel_that_arrives_during_the_prefill_stops_the_request(served, monkeypatch):
    """Being prefilled, a request is neither waiting nor running; its cancel must not be lost there."""
    import threading

    engine = Engine(str(served["model"]), served["root"], EngineConfig(dtype="float32"))
    in_prefill, release = threading.Event(), threading.Event()
    forward = engine.model.forward

    def slow_first_forward(*args, **kwargs):
        if not in_prefill.is_set():
            in_prefill.set()
            release.wait(10)
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", slow_first_forward)
    events, done = [], threading.Event()
    request = engine.submit_generation("copy red 3", "lora", SamplingParams(max_tokens=200, ignore_eos=True, n=4),
                                       lambda e: (events.append(e), e.finished and done.set()))
    engine.start()
    try:
        assert in_prefill.wait(10)
        engine.cancel(request)
        release.set()
        assert done.wait(30)
        finished = [e for e in events if e.finished]
        assert {e.finish_reason for e in finished} == {"cancelled"}
        assert len([e for e in events if e.text]) <= 4, "at most the prefill's own token per row"
    finally:
        release.set()
        engine.shutdown()


def test_prefill_groups_keep_similar_lengths_together(served):
    from lmtune.serve.requests import Sequence_
    from lmtune.serve.scheduler import prefill_groups

    engine = served["engine"]
    prompt = engine.adapter("prompt")  # 4 virtual tokens
    echo = SamplingParams(echo=True, logprobs=0)
    rows = [[Sequence_(str(i), [1] * n, adapter, params, print, None)]
            for i, (n, adapter, params) in enumerate([(4, None, SamplingParams()), (20, None, SamplingParams()),
                                                      (5, None, SamplingParams()), (1, prompt, SamplingParams()),
                                                      (21, None, SamplingParams()), (4, None, echo), (5, None, echo),
                                                      (4, None, echo)])]
    groups = prefill_groups(rows, scored_tokens=10)
    assert sorted(len(r[0].prompt_ids) for g in groups for r in g) == [1, 4, 4, 4, 5, 5, 20, 21]  # nobody lost
    # scored prompts (echo + logprobs) apart, at most 10 prompt positions a group
    assert [[r[0].id for r in g] for g in groups] == [["0", "2", "3"], ["1", "4"], ["5", "7"], ["6"]]


# ---- request fields: logprobs and echo, n rows, penalties ----------------------------------------------------


def _events(engine, prompt, adapter, params) -> dict[int, list]:
    """Every event of one request, by row, once all its rows have finished."""
    events: dict[int, list] = {}
    done = threading.Semaphore(0)

    def on_event(event):
        events.setdefault(event.index, []).append(event)
        if event.finished:
            done.release()

    engine.start()
    engine.submit_generation(prompt, adapter, params, on_event)
    for _ in range(params.n):
        assert done.acquire(timeout=60)
    assert all(e[-1].finish_reason in ("stop", "length") for e in events.values()), events
    return events


def _generated(events) -> list:
    return [entry for e in events for entry in e.logprobs or []]


def _trained_logprobs(served, name, ids) -> torch.Tensor:
    """log-softmax of the trained model's own full forward over `ids` (what `lmtune eval` loads), outside the server."""
    model = load_run(served["root"] / name).model.body
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -len(ids):].float(), -1)


def test_logprobs_with_and_without_echo_equal_a_full_forward_in_a_mixed_batch(served):
    """LoRA, bottleneck, prompt-tuning, p-tuning and prefix rows decode together, some echoing their prompt; every
    reported log-probability (prompt and generated tokens, and the top alternatives) equals the trained adapter's
    own full forward over prompt + generated text."""
    engine = served["engine"]
    names = ["lora", "bottleneck-series", "prompt", "p-tuning", "prefix", "bottleneck-parallel"]
    echo = [True, False, True, False, True, True]
    results: dict[int, list] = {}
    done = threading.Semaphore(0)
    engine.start()
    with engine._wake:  # queue them all before the scheduler looks: one prefill group, one decode batch
        for row, (name, prompt) in enumerate(zip(names, PROMPTS)):
            params = SamplingParams(max_tokens=3, logprobs=2, echo=echo[row], ignore_eos=True)
            engine.submit_generation(prompt, name, params, lambda e, r=row: (
                results.setdefault(r, []).append(e), e.finished and done.release()))
    for _ in names:
        assert done.acquire(timeout=60)
    for row, name in enumerate(names):
        events = results[row]
        prompt_ids = engine.tokenizer(PROMPTS[row])["input_ids"]
        generated = _generated(events)
        ids = prompt_ids + [g.token for g in generated]
        reference = _trained_logprobs(served, name, ids)
        if echo[row]:
            scored = events[0].prompt_logprobs
            assert [s.token for s in scored] == prompt_ids and scored[0].logprob is None
            for j, entry in enumerate(scored[1:], start=1):
                assert abs(entry.logprob - reference[j - 1, prompt_ids[j]]) < 1e-4
                assert [t for t, _ in entry.top] == reference[j - 1].topk(2).indices.tolist()
        else:
            assert events[0].prompt_logprobs is None
        assert len(generated) == 3
        for k, entry in enumerate(generated):
            position = len(prompt_ids) - 1 + k
            assert abs(entry.logprob - reference[position, entry.token]) < 1e-4, (name, k)
            assert entry.token == int(reference[position].argmax())  # greedy
            top = reference[position].topk(2)
            assert [t for t, _ in entry.top] == top.indices.tolist()
            assert max(abs(lp - v) for (_, lp), v in zip(entry.top, top.values.tolist())) < 1e-4


def test_max_tokens_zero_with_echo_scores_the_prompt_only(served):
    events = _events(served["engine"], "copy red 3", "lora", SamplingParams(max_tokens=0, echo=True, logprobs=0))
    (only,) = events[0]
    assert only.finished and only.completion_tokens == 0 and only.text == "" and only.logprobs == []
    assert len(only.prompt_logprobs) == len(served["engine"].tokenizer("copy red 3")["input_ids"])


class _Prefills:
    def __init__(self):
        self.rows = 0

    def on_step(self, batch_size, new_tokens, prefill_rows):
        self.rows += prefill_rows

    def on_queue(self, depth): ...


def test_n_rows_share_one_prefill_and_each_samples_with_its_own_seed(served):
    observer = _Prefills()
    engine = Engine(str(served["model"]), served["root"], EngineConfig(max_batch_size=4), observer=observer)
    try:
        params = SamplingParams(max_tokens=6, temperature=1.0, seed=5, n=3, ignore_eos=True)
        rows = _events(engine, "copy red 3", "prefix", params)
        assert observer.rows == 1  # one prompt, one prefill row, three choices
        texts = ["".join(e.text for e in rows[i]) for i in range(3)]
        for i, text in enumerate(texts):  # row i samples as a lone request with seed 5 + i would
            one = SamplingParams(max_tokens=6, temperature=1.0, seed=5 + i, ignore_eos=True)
            assert text == "".join(e.text for e in _events(engine, "copy red 3", "prefix", one)[0])
        assert len(set(texts)) > 1, "three seeds gave one text: the test could not tell rows apart"
    finally:
        engine.shutdown()


def _penalised_by_hand(logits: torch.Tensor, prompt: list[int], generated: list[int], repetition: float,
                       frequency: float, presence: float) -> torch.Tensor:
    """vLLM's definitions, written out token by token (not through lmtune.serve.sampling)."""
    out = logits.clone()
    for token in set(prompt) | set(generated):
        out[token] = out[token] / repetition if out[token] > 0 else out[token] * repetition
    for token in set(generated):
        out[token] -= frequency * generated.count(token) + presence
    return out


def test_penalties_change_greedy_decoding_as_computed_by_hand(served):
    engine = served["engine"]
    prompt = "copy the the the new 5 blue"
    ids = engine.tokenizer(prompt)["input_ids"]
    plain = [e.token for e in _generated(_events(engine, prompt, "lora", SamplingParams(max_tokens=6, logprobs=0,
                                                                                         ignore_eos=True))[0])]
    knobs = {"repetition_penalty": 1.5, "frequency_penalty": 1.0, "presence_penalty": 0.5}
    params = SamplingParams(max_tokens=6, logprobs=0, ignore_eos=True, **knobs)
    penalised = [e.token for e in _generated(_events(engine, prompt, "lora", params)[0])]
    assert penalised != plain, "the penalties changed nothing: the test would prove nothing"
    dropped = False
    for k, token in enumerate(penalised):
        logits = engine.prefill_logits([ids + penalised[:k]], ["lora"])[0][-1].float()
        by_hand = _penalised_by_hand(logits, ids, penalised[:k], *knobs.values())
        assert token == int(by_hand.argmax()), k
        raw_best = int(logits.argmax())
        if raw_best != token:  # the token greedy decoding would take lost probability to the penalty
            assert torch.softmax(by_hand, -1)[raw_best] < torch.softmax(logits, -1)[raw_best]
            dropped = True
    assert dropped


def test_logit_bias_and_min_tokens(served):
    engine = served["engine"]
    eos = engine.end_ids[0]
    banned = engine.prefill_logits([engine.tokenizer("copy red 3")["input_ids"]], ["lora"])[0][-1]
    first, second = banned.topk(2).indices.tolist()
    events = _events(engine, "copy red 3", "lora", SamplingParams(max_tokens=2, logprobs=0, logit_bias={first: -100}))
    assert _generated(events[0])[0].token == second  # the best token banned: the next best comes
    forced = _events(engine, "copy red 3", "lora", SamplingParams(max_tokens=8, logit_bias={eos: 100}, logprobs=0))[0]
    assert forced[-1].completion_tokens == 1 and forced[-1].finish_reason == "stop"  # the end token counts
    assert [e.token for e in _generated(forced)] == [eos]  # and has its logprob (the harness drops the last entry)
    held = _events(engine, "copy red 3", "lora", SamplingParams(max_tokens=8, logit_bias={eos: 100}, min_tokens=3))
    assert held[0][-1].completion_tokens == 4 and held[0][-1].finish_reason == "stop"  # 3, then the end
