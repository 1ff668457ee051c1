"""Generative tasks: instruction tuning and translation on tiny causal and encoder-decoder models."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import datasets
import pytest
import torch

from conftest import SHARED_DATA, write_jsonl
from lmtune.data.templates import ALPACA, ALPACA_WITH_INPUT, Example, build_template, record_format, to_example
from lmtune.device import to_model_device
from lmtune.errors import LmtuneError
from lmtune.results import read_metrics
from lmtune.runconfig import build_task, resolve_config
from lmtune.train import train
from lmtune.train.artifacts import load_run
from prefix_reference import prefix_greedy, prefix_llama_logits
from reference_scores import number_answers, read_predictions, sacrebleu_scores

WORDS = "red blue green black white big small old new".split()
INSTRUCTION = "Translate the following English text into German."


def copy_rows(count: int, seed: int) -> list[dict]:
    """"which colour is X" -> "the answer is X": learnable by a tiny model in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        word, number = rng.choice(WORDS), rng.randint(0, 9)
        rows.append({"instruction": f"copy {word} {number}", "input": "", "output": f"the answer is {number}", "answer": str(number)})
    return rows


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gen-data")
    files = {
        "train": write_jsonl(folder / "train.jsonl", copy_rows(160, 1)),
        "validation": write_jsonl(folder / "validation.jsonl", copy_rows(16, 2)),
        "test": write_jsonl(folder / "test.jsonl", copy_rows(12, 3)),
    }
    rng = random.Random(4)
    pairs = [[rng.choice(WORDS) for _ in range(3)] for _ in range(60)]
    for lang, sentences in (("en", [" ".join(p) for p in pairs]), ("de", [" ".join(reversed(p)) for p in pairs])):
        with gzip.open(folder / f"train.{lang}.gz", "wt", encoding="utf-8") as handle:
            handle.write("\n".join(sentences) + "\n")
    files["parallel"] = folder / "train"
    return files


@pytest.fixture(scope="module")
def gen_models(tmp_path_factory) -> dict[str, Path]:
    from lmtune.models.tiny import build_tiny_model

    texts = [ALPACA, ALPACA_WITH_INPUT, INSTRUCTION, " ".join(WORDS), "copy the answer is 0 1 2 3 4 5 6 7 8 9"]
    folder = tmp_path_factory.mktemp("gen-models")
    return {arch: build_tiny_model(arch, folder / arch, texts) for arch in ("llama", "gpt2", "t5", "bert")}


def gen_config(model: Path, data: dict, out: Path, method: dict, task: str = "instruction", **train_options):
    raw = {
        "model": {"name": str(model), "max_length": 64, "dtype": "float32"},  # fp32 tolerances on a GPU too
        "task": {"name": task, "generation": {"max_new_tokens": 6, "batch_size": 8}},
        "data": {"train": str(data["train"]), "validation": str(data["validation"]), "test": str(data["test"])},
        "method": method,
        "train": {"batch_size": 16, "progress": False, "num_threads": 1, "learning_rate": 1e-2, "max_steps": 12,
                  "eval_every": "no", "warmup_ratio": 0.0, "precision": "fp32", **train_options},
        "output": {"dir": str(out), "name": f"{task}-{method['name']}"},
    }
    return resolve_config(raw)


# ---- records and templates -----------------------------------------------------------------------------------


def test_alpaca_prompt_is_the_papers_template():
    example = to_example({"instruction": "Add 2 and 3.", "input": "", "output": "5", "answer": "5"}, "alpaca")
    prompt = build_template("alpaca", tokenizer=None).prompt(example)
    assert prompt == ALPACA.format(instruction="Add 2 and 3.")
    assert prompt.endswith("### Response:\n")
    with_input = to_example({"instruction": "Add.", "input": "2 and 3", "output": "5"}, "alpaca")
    assert "### Input:\n2 and 3\n\n### Response:\n" in build_template("alpaca", None).prompt(with_input)
    assert with_input.gold == "5"  # no answer field: the output is the gold


def test_gsm8k_records_keep_the_rationale_and_final_number():
    row = {"question": "Q?", "answer": "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 1,234"}
    assert record_format(["question", "answer"]) == "gsm8k"
    example = to_example(row, "gsm8k")
    assert example.gold == "1234"
    assert "<<" not in example.output and example.output.endswith("The answer is 1234.")
    with pytest.raises(LmtuneError, match="####"):
        to_example({"question": "Q?", "answer": "no final line"}, "gsm8k")


def test_real_gsm8k_and_llm_adapters_rows_convert():
    gsm8k = json.loads((SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    assert to_example(gsm8k, "gsm8k").gold == "18"
    math = json.loads((SHARED_DATA / "llm_adapters" / "ft-training_set" / "math_data.json").read_text())[0]
    example = to_example(math, record_format(list(math)))
    assert example.gold == "4.0" and example.output.endswith("The answer is 4.")


def test_unknown_record_format_names_the_accepted_ones():
    with pytest.raises(LmtuneError, match="instruction.*question.*messages"):
        record_format(["text", "label"])


def test_chat_template_response_is_the_rendered_assistant_turn(gen_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gen_models["llama"])
    tokenizer.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant {% endif %}"
    )
    template = build_template("auto", tokenizer)
    example = Example("copy red 3", "", "the answer is 3", "3")
    assert template.name == "chat"
    assert template.prompt(example) == "<s>user copy red 3</s><s>assistant "
    assert template.response(example) == "the answer is 3</s>"
    chat = to_example({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red"}]}, "chat")
    assert template.prompt(chat) == "<s>user hi</s><s>assistant "
    with pytest.raises(LmtuneError, match="chat template"):
        build_template("alpaca", tokenizer).prompt(chat)


def test_loss_covers_the_response_only_unless_asked(gen_models, gen_data, tmp_path):
    from lmtune.models.loading import load_backbone

    for train_on_inputs in (False, True):
        cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"})
        cfg = cfg.updated({"task.train_on_inputs": train_on_inputs})
        task = build_task(cfg)
        model = task.build_model(load_backbone(cfg.model, task.backbone_class))
        row = task.encode(task.load_data().train.select([0]), model.tokenizer)[0]
        tokenizer = model.tokenizer
        learned = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        if train_on_inputs:
            assert learned == row["input_ids"]
        else:
            text = tokenizer.decode(learned[:-1])
            assert text.startswith("the answer is") and learned[-1] == tokenizer.eos_token_id


def test_rows_cut_to_max_length_are_counted(gen_models, gen_data, tmp_path):
    from transformers import AutoTokenizer

    # Short and long instructions, and a limit that fits the short rows exactly: only the long ones are cut.
    rows = copy_rows(10, 5) + [{**row, "instruction": f"{row['instruction']} {' '.join(WORDS)}"} for row in copy_rows(6, 6)]
    data = {**gen_data, "train": write_jsonl(tmp_path / "mixed.jsonl", rows)}
    tokenizer = AutoTokenizer.from_pretrained(gen_models["llama"])
    # Counted here from the alpaca prompt text, the response and the end token, not by the task's encoder.
    lengths = [len(tokenizer(ALPACA.format(instruction=r["instruction"]))["input_ids"])
               + len(tokenizer(r["output"], add_special_tokens=False)["input_ids"]) + 1 for r in rows]
    limit = min(lengths)
    expected = sum(length > limit for length in lengths)
    assert 0 < expected < len(rows), lengths
    cfg = gen_config(gen_models["llama"], data, tmp_path, {"name": "lora"}, max_steps=1)
    result = train(cfg.updated({"model.max_length": limit}))
    assert result.metrics["truncated_train_rows"] == expected


# ---- training and evaluation ---------------------------------------------------------------------------------

GENERATIVE_VARIANTS = {
    "full": {"name": "full"},
    "freeze-last1": {"name": "freeze", "train_last_layers": 1},
    "lora": {"name": "lora", "rank": 4},
    "bottleneck": {"name": "bottleneck", "bottleneck_size": 8},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "p_tuning": {"name": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 4},
    "peft-IA3": {"name": "peft", "peft_type": "IA3"},
}


@pytest.mark.parametrize("variant", list(GENERATIVE_VARIANTS))
def test_instruction_tuning_lowers_the_loss_and_scores_generations(gen_models, gen_data, tmp_path, variant):
    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, GENERATIVE_VARIANTS[variant], max_steps=20)
    task = build_task(cfg)
    result = train(cfg)
    before = _untrained_loss(cfg, task)
    after = result.metrics["splits"]["validation"]["loss"]
    assert after < before
    test = result.metrics
    assert test["eval_split"] == "test" and test["answer_type"] == "number"
    predictions = read_predictions(result.run_dir, test)
    assert len(predictions) == 12 and {"generation", "extracted", "gold", "correct"} <= set(predictions[0])
    assert {k: test[k] for k in ("accuracy", "correct", "no_answer")} == pytest.approx(number_answers(predictions))


def _untrained_loss(cfg, task) -> float:
    from lmtune.models.loading import load_backbone

    fresh = build_task(cfg)
    model = fresh.build_model(load_backbone(cfg.model, fresh.backbone_class))
    return fresh.loss(model, fresh.load_data().validation, 16)


def test_a_frozen_body_with_no_head_is_refused(gen_models, gen_data, tmp_path):
    with pytest.raises(LmtuneError, match="train_last_layers"):
        train(gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "freeze"}))


def test_encoders_cannot_generate(gen_models, gen_data, tmp_path):
    with pytest.raises(LmtuneError, match="decoder .* or an encoder-decoder"):
        train(gen_config(gen_models["bert"], gen_data, tmp_path, {"name": "lora"}))


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning"])
def test_saved_run_generates_what_the_trained_model_generated(gen_models, gen_data, tmp_path, method):
    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, GENERATIVE_VARIANTS[method])
    result = train(cfg)
    rows = [{"instruction": f"copy {w} {i}"} for i, w in enumerate(WORDS[:5])]
    task = build_task(result.config)
    in_memory = task.predict(result.model, rows)
    loaded = load_run(result.run_dir)
    assert loaded.task.predict(loaded.model, rows) == in_memory


@pytest.mark.parametrize("method", ["lora", "full", "prompt_tuning", "p_tuning", "prefix_tuning", "bottleneck"])
def test_batched_generation_equals_one_row_at_a_time(gen_models, gen_data, tmp_path, method):
    """Left padding must not change a row's greedy output."""
    result = train(gen_config(gen_models["llama"], gen_data, tmp_path, GENERATIVE_VARIANTS[method]))
    task = build_task(result.config)
    rows = [{"instruction": "copy red 1"}, {"instruction": "copy big old new white 7 and more words"}, {"instruction": "copy 2"}]
    batched = task.predict(result.model, rows)
    task.cfg = task.cfg.updated({"task.generation.batch_size": 1})
    assert [task.predict(result.model, [row])[0] for row in rows] == batched


# ---- translation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "method"), [("t5", "lora"), ("llama", "lora"), ("t5", "prompt_tuning"),
                                              ("t5", "prefix_tuning"), ("t5", "bottleneck"), ("t5", "full")])
def test_translation_from_parallel_files_reports_sacrebleu_scores(gen_models, gen_data, tmp_path, arch, method):
    data = {"train": gen_data["parallel"], "validation": gen_data["parallel"], "test": gen_data["parallel"]}
    cfg = gen_config(gen_models[arch], data, tmp_path, GENERATIVE_VARIANTS[method], task="translation")
    cfg = cfg.updated({"data.max_eval_samples": 10})
    result = train(cfg)
    metrics = result.metrics
    for name in ("bleu", "chrf", "ter"):
        assert "version:" in metrics[f"{name}_signature"]
    assert metrics["splits"]["validation"]["rows"] == 10
    predictions = read_predictions(result.run_dir, metrics)
    assert set(predictions[0]) == {"source", "reference", "translation"} and len(predictions) == 10
    assert {k: metrics[k] for k in ("bleu", "chrf", "ter")} == pytest.approx(sacrebleu_scores(predictions))


def test_beam_search_and_stop_strings(gen_models, gen_data, tmp_path):
    result = train(gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"}))
    task = build_task(result.config)
    rows = [{"instruction": "copy red 1"}, {"instruction": "copy blue 2"}]
    greedy = task.predict(result.model, rows)
    task.cfg = task.cfg.updated({"task.generation.num_beams": 3})
    beams = task.predict(result.model, rows)
    # The reference: transformers' own beam search on the same model, one prompt at a time, no padding.
    from lmtune.evaluate import generation

    ends = generation.end_token_ids(result.model)
    for row, beam in zip(rows, beams):
        template = task.template(result.model.tokenizer)
        prompt = template.prompt(task.examples(datasets.Dataset.from_list([row]))[0])
        ids = to_model_device(result.model.tokenizer([prompt], return_tensors="pt", return_token_type_ids=False,
                                     add_special_tokens=template.add_special_tokens)["input_ids"], result.model)
        with torch.no_grad():
            out = result.model.backbone.body.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=3, do_sample=False,
                max_new_tokens=task.cfg.task.generation.max_new_tokens, eos_token_id=ends,
                pad_token_id=result.model.tokenizer.pad_token_id)
        expected = result.model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert beam["generation"] == expected, (row, beam, expected)
    task.cfg = task.cfg.updated({"task.generation.num_beams": 1})
    text = greedy[0]["generation"]
    stop, before = stop_inside(text)
    task.cfg = task.cfg.updated({"task.generation.stop": [stop]})
    cut = task.predict(result.model, rows[:1])[0]["generation"]
    assert cut == before and stop not in cut, (text, stop, cut)


def stop_inside(text: str) -> tuple[str, str]:
    """A stop string taken from the generation itself, so it must occur, with text before it, so the cut must
    leave something shorter than the generation but not empty; and what that cut must be. A generation too short
    for one fails here instead of letting the check pass on an empty cut."""
    for word in text.split()[1:]:
        before = text[: text.index(word)].strip()  # a stop cuts at its first occurrence
        if before:
            return word, before
    raise AssertionError(f"the stop-string check needs a generation of two words or more, got {text!r}")


def test_translation_needs_aligned_files(gen_models, gen_data, tmp_path):
    (tmp_path / "bad.en").write_text("a\nb\n")
    (tmp_path / "bad.de").write_text("a\n")
    data = {"train": tmp_path / "bad", "validation": tmp_path / "bad", "test": tmp_path / "bad"}
    with pytest.raises(LmtuneError, match="line-aligned"):
        train(gen_config(gen_models["t5"], data, tmp_path, {"name": "lora"}, task="translation"))


# ---- evaluation suites -----------------------------------------------------------------------------------------


def test_eval_suite_on_a_run_and_on_the_untuned_base(gen_models, gen_data, tmp_path, capsys):
    from lmtune.cli import main

    root = tmp_path / "suite"
    for name, rows in (("numbers", copy_rows(6, 5)), ("yesno", [{"instruction": "true or false", "input": "",
                                                                "output": "", "answer": "true"}] * 3)):
        (root / name).mkdir(parents=True)
        (root / name / "test.json").write_text(json.dumps(rows))
    result = train(gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"}))
    common = ["--task", "llm_adapters", "--datasets", "numbers,yesno", "--data-root", str(root), "--max-samples", "4"]
    assert main(["eval", str(result.run_dir), *common, "task.generation.max_new_tokens=3"]) == 0  # override last
    table = capsys.readouterr().out
    assert "numbers" in table and "yesno" in table and "mean" in table
    saved = json.loads((result.run_dir / "metrics.json").read_text())["evaluations"]
    assert [e["split"] for e in saved] == ["llm_adapters/numbers", "llm_adapters/yesno"]
    # keyword answers (an option set) are scored by the options' log-likelihood, numbers by generating
    assert [e["scoring"] for e in saved] == ["generation", "log-likelihood"] and saved[0]["rows"] == 4
    assert [e.split for e in read_metrics(result.run_dir).evaluations] == [e["split"] for e in saved]  # typed too
    assert (result.run_dir / "predictions" / "llm_adapters" / "numbers.jsonl").is_file()

    out = tmp_path / "zero-shot"
    assert main(["eval", "--base", str(gen_models["llama"]), *common, "--output", str(out),
                 "task.generation.max_new_tokens=4", "train.progress=false"]) == 0
    assert json.loads((out / "predictions" / "llm_adapters.json").read_text())["sets"]["numbers"]["rows"] == 4
    assert main(["eval", str(result.run_dir), "--task", "llm_adapters", "--datasets", "nope", "--data-root", str(root)]) == 2
    assert "available: numbers, yesno" in capsys.readouterr().err

    assert main(["predict", str(result.run_dir), "--text", "copy red 1", "--text", "copy blue 2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [row["instruction"] for row in lines] == ["copy red 1", "copy blue 2"] and "generation" in lines[0]


def test_length_batches_group_longest_first_and_equal_lengths_on_request():
    from lmtune.evaluate.generation import length_batches

    lengths = [3, 9, 3, 5, 9, 3]
    assert length_batches(lengths, 2, equal_lengths=False) == [[1, 4], [3, 0], [2, 5]]
    assert length_batches(lengths, 2, equal_lengths=True) == [[1, 4], [3], [0, 2], [5]]


def test_random_init_is_the_same_architecture_with_other_weights_and_reloads(gen_models, gen_data, tmp_path):
    """`model.init=random`: the no-transfer control; a run on it reloads onto the same random weights."""
    import torch

    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"}, max_steps=2)
    cfg = cfg.updated({"model.init": "random"})
    result = train(cfg)
    pretrained = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"})
    from lmtune.models.loading import load_backbone

    trained_on = load_backbone(result.config.model, "AutoModelForCausalLM", cfg.train.seed).body.state_dict()
    original = load_backbone(pretrained.model, "AutoModelForCausalLM").body.state_dict()
    name = next(k for k in original if k.endswith("q_proj.weight"))
    assert not torch.equal(trained_on[name], original[name])
    loaded = load_run(result.run_dir)
    rows = [{"instruction": "copy red 1"}]
    assert loaded.task.predict(loaded.model, rows) == build_task(result.config).predict(result.model, rows)


def test_a_killed_generative_run_resumes_with_the_task_defaults(gen_models, gen_data, tmp_path):
    """The saved config holds resolved task defaults (max_length 256, metric loss); resuming with the same unresolved
    config must be accepted and finish the remaining steps."""
    from test_strategy_contract import StopAt

    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"}, max_steps=6, eval_every="steps",
                     eval_steps=2)
    cfg = cfg.updated({"model.max_length": None})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(3)])
    resumed = cfg.updated({"train.resume": True})
    result = train(resumed)
    assert result.metrics["global_step"] == 6 and result.config.model.max_length == 256


def slow_greedy(model, prompt: str, steps: int, add_special_tokens: bool = True) -> list[int]:
    """The reference: a full forward over the whole sequence per new token (no cache, no padding), the very
    computation training does."""
    import torch

    ids = to_model_device(model.tokenizer([prompt], return_tensors="pt", return_token_type_ids=False,
                          add_special_tokens=add_special_tokens)["input_ids"], model)
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, start:].tolist()


def test_prefix_tuning_forward_equals_a_hand_written_prefix_attention(gen_models, gen_data, tmp_path):
    """PEFT's training forward for prefix tuning against attention over [prefix; text] written out by hand: the
    ground the prefix-tuning generation reference stands on."""
    result = train(gen_config(gen_models["llama"], gen_data, tmp_path, GENERATIVE_VARIANTS["prefix_tuning"]))
    model = result.model.eval()
    ids = to_model_device(model.tokenizer(["copy red green 4 the answer is"], return_tensors="pt",
                                          return_token_type_ids=False)["input_ids"], model)
    with torch.no_grad():
        trained = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        without_prefix = model.body.get_base_model()(input_ids=ids).logits
    by_hand = prefix_llama_logits(model.body, ids)
    torch.testing.assert_close(by_hand, trained, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(by_hand, without_prefix, atol=1e-3), "the prefix must change the logits"


# Found when this test was made able to fail: the bottleneck adapter does not learn the copy task on the tiny
# Llama (validation loss 3.81 -> 3.79 in 40 steps at lr 0.1, 3.81 at 0.3), so every reference generation is an
# immediate end token and the comparison is empty. Strict: it fails loudly once the bottleneck learns.
BOTTLENECK_LEARNS_NOTHING = pytest.mark.xfail(strict=True, reason="bottleneck does not learn on the tiny Llama")


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "p_tuning", "prefix_tuning",
                                    pytest.param("bottleneck", marks=BOTTLENECK_LEARNS_NOTHING)])
def test_batched_cached_generation_equals_the_slow_reference(gen_models, gen_data, tmp_path, method):
    """generate_texts (left padding, KV cache, soft prompts placed after the padding) gives each row the tokens
    a plain full forward would. PEFT's own generate fails this for prompt tuning: from the third token on
    (measured with transformers 5.24, peft 0.21.2), which is why soft prompts take `generate_after_soft_prompt`."""
    import torch

    from lmtune.config.schema import GenerationConfig
    from lmtune.evaluate import generation

    result = train(gen_config(gen_models["llama"], gen_data, tmp_path, GENERATIVE_VARIANTS[method]))
    model = result.model.eval()
    # The prompts as training formatted them, so the model answers (raw text may end at once: nothing to compare).
    task = build_task(result.config)
    template = task.template(model.tokenizer)
    rows = [{"instruction": text} for text in ("copy big 4", "copy red green blue old new 7", "copy 2")]
    prompts = [template.prompt(e) for e in task.examples(datasets.Dataset.from_list(rows))]
    decoded = []
    original = generation.tqdm
    ends = generation.end_token_ids(model)
    with torch.no_grad():
        for prompt in prompts:
            # prefix tuning generates by the very full forward slow_greedy runs: its reference is written by hand
            reference = prefix_greedy if method == "prefix_tuning" else slow_greedy
            ids = reference(model, prompt, 5, template.add_special_tokens)
            # generation stops at an end token; the reference runs on: it is cut at its first end token
            ids = ids[: next((i for i, token in enumerate(ids) if token in ends), len(ids))]
            decoded.append(model.tokenizer.decode(ids, skip_special_tokens=True).strip())
    texts = generation.generate_texts(model, prompts, GenerationConfig(max_new_tokens=5, batch_size=3),
                                      template.add_special_tokens, progress=False)
    assert generation.tqdm is original
    assert any(decoded), "the reference generates nothing: the comparison would be empty"
    assert texts == decoded, (prompts, texts, decoded, ends)


@pytest.mark.parametrize("method", ["prompt_tuning", "lora"])
def test_encoder_decoder_batched_generation_equals_one_row(gen_models, gen_data, tmp_path, method):
    data = {"train": gen_data["parallel"], "validation": gen_data["parallel"], "test": gen_data["parallel"]}
    result = train(gen_config(gen_models["t5"], data, tmp_path, GENERATIVE_VARIANTS[method], task="translation"))
    task = build_task(result.config)
    rows = [{"source": "red"}, {"source": "big old new white green"}, {"source": "black blue"}]
    batched = task.predict(result.model, rows)
    task.cfg = task.cfg.updated({"task.generation.batch_size": 1})
    assert [task.predict(result.model, [row])[0] for row in rows] == batched


def test_rows_without_a_response_are_left_out_and_counted(gen_models, tmp_path):
    rows = copy_rows(20, 7)
    rows[3]["output"] = ""
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "validation": write_jsonl(tmp_path / "v.jsonl", rows[:4]),
            "test": write_jsonl(tmp_path / "t.jsonl", rows[:2])}
    result = train(gen_config(gen_models["llama"], data, tmp_path, {"name": "lora"}, max_steps=1))
    assert result.metrics["dropped_train_rows"] == 1
    empty = [{**r, "output": ""} for r in rows]
    data["train"] = write_jsonl(tmp_path / "empty.jsonl", empty)
    with pytest.raises(LmtuneError, match="nothing to learn"):
        train(gen_config(gen_models["llama"], data, tmp_path / "b", {"name": "lora"}))
