"""Multiple choice by log-likelihood (issue 16): layouts, the harness's scoring, every strategy trains and scores."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl
from lmtune.data.choices import choice_items
from lmtune.device import to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.choices import score_rows
from lmtune.runconfig import build_task, resolve_config
from lmtune.train import train
from test_generative import GENERATIVE_VARIANTS as VARIANTS  # every strategy kind, on a decoder
from test_generative import WORDS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llm_adapters" / "dataset"


def pick_rows(count: int, seed: int) -> list[dict]:
    """"copy X" with three words to choose from; the gold is X: learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        choices = rng.sample(WORDS, 3)
        gold = rng.randrange(3)
        rows.append({"question": f"copy {choices[gold]}", "choices": choices, "answer": gold})
    return rows


@pytest.fixture(scope="module")
def mc_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mc-data")
    return {k: write_jsonl(folder / f"{k}.jsonl", pick_rows(n, s)) for k, n, s in
            (("train", 120, 1), ("validation", 24, 2), ("test", 24, 3))}


@pytest.fixture(scope="module")
def mc_models(tmp_path_factory) -> dict[str, Path]:
    from lmtune.models.tiny import build_tiny_model

    texts = ["Question: copy Answer: " + " ".join(WORDS)]
    folder = tmp_path_factory.mktemp("mc-models")
    return {arch: build_tiny_model(arch, folder / arch, texts) for arch in ("llama", "bert")}


def mc_config(model: Path, data: dict, out: Path, method: dict, **task):
    return resolve_config({
        "model": {"name": str(model), "max_length": 32, "dtype": "float32"},
        "task": {"name": "multiple_choice", **task},
        "data": {k: str(v) for k, v in data.items()},
        "method": method,
        "train": {"batch_size": 8, "progress": False, "num_threads": 1, "learning_rate": 1e-2, "max_steps": 4,
                  "eval_every": "no", "warmup_ratio": 0.0, "precision": "fp32"},
        "output": {"dir": str(out), "name": f"mc-{method['name']}"},
    })


# ---- layouts -----------------------------------------------------------------------------------------------


def test_llm_adapters_records_give_their_options_and_gold():
    arc = {"instruction": "Please choose the correct answer to the question: Which is a gas?\n\nAnswer1: rock "
                          "Answer2: steam Answer3: ice\n\nAnswer format: answer1/answer2/answer3", "answer": "answer2"}
    boolq = {"instruction": "Please answer the following question with true or false, question: is the sky blue?"
                            "\n\nAnswer format: true/false", "answer": "true"}
    wino = {"instruction": "Please choose the correct answer to fill in the blank to complete the given sentence: "
                           "Ann gave Bo a gift because _ was kind.\n\nOption1: Ann Option2: Bo Answer format: "
                           "option1/option2", "answer": "option1"}
    a, b, w = choice_items([arc, boolq, wino], "llm_adapters")
    assert (a.question, a.choices, a.continuations, a.gold) == (
        "Which is a gas?", ["rock", "steam", "ice"], [" rock", " steam", " ice"], 1)
    assert (b.question, b.choices, b.gold) == ("is the sky blue?", ["no", "yes"], 1)
    # WinoGrande, the harness's way: the option fills the blank, the shared rest of the sentence is scored.
    assert w.fills_blank and w.contexts == ["Ann gave Bo a gift because Ann", "Ann gave Bo a gift because Bo"]
    assert w.continuations == [" was kind."] * 2 and w.gold == 0


def test_hub_layouts_and_answer_forms():
    arc = {"question": "Q?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]}, "answerKey": "C"}
    piqa = {"goal": "open a jar", "sol1": "twist", "sol2": "kick", "label": 0}
    hella = {"activity_label": "Baking", "ctx": "He mixes the flour [title] and", "endings": ["a", "b", "c", "d"], "label": "3"}
    wino = {"sentence": "The cup beat the jug because _ was fast.", "option1": "cup", "option2": "jug", "answer": "2"}
    items = [choice_items([row], "auto")[0] for row in (arc, piqa, hella, wino)]
    assert [i.gold for i in items] == [2, 0, 3, 1]
    assert items[2].question == "Baking: He mixes the flour. and"
    for answer, gold in ((1, 1), ("B", 1), ("y", 1), ("2", 2)):
        assert choice_items([{"question": "q", "choices": ["x", "y", "z"], "answer": answer}], "columns")[0].gold == gold
    with pytest.raises(LmtuneError, match="row 0 .*not an index, a letter or one of the choices"):
        choice_items([{"question": "q", "choices": ["x", "y"], "answer": "w"}], "columns")
    with pytest.raises(LmtuneError, match="two or more"):
        choice_items([{"question": "q", "choices": ["x"], "answer": 0}], "columns")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not beside the checkout")
def test_every_arc_easy_and_boolq_test_row_parses():
    for name, choices in (("ARC-Easy", {3, 4, 5}), ("boolq", {2})):
        items = choice_items(json.loads((SHARED / name / "test.json").read_text()), "llm_adapters")
        assert {len(i.choices) for i in items} == choices
        assert all(i.gold is not None and i.question and all(i.choices) for i in items)


# ---- scoring -----------------------------------------------------------------------------------------------


def test_the_continuation_is_tokenised_as_in_running_text(mc_models, mc_data, tmp_path):
    task = build_task(mc_config(mc_models["llama"], mc_data, tmp_path, {"name": "lora"}))
    from lmtune.models.loading import load_backbone

    tokenizer = load_backbone(task.cfg.model, task.backbone_class).tokenizer
    trailing = task.encode_pair("Answer: ", "red", tokenizer)
    plain = task.encode_pair("Answer:", " red", tokenizer)
    assert trailing == plain, "a trailing space moves to the continuation, as the harness does"
    scored = [t for t, m in zip(plain.input_ids, plain.target_mask) if m]
    assert scored == tokenizer(" red", add_special_tokens=False)["input_ids"]
    item = task.items(task.load_data().test)[0]
    _, owners = task.scoring_rows([item], tokenizer)
    assert [length for _, _, length in owners] == [len(c) for c in item.choices], \
        "acc_norm divides by the choice's own length, as the harness's len(choice), not the space before it"


def token_by_token(body, ids: list[int], target_mask: list[int]) -> float:
    """The reference: one unpadded forward per scored token, its log-probability read at the last position."""
    total = 0.0
    for position, scored in enumerate(target_mask):
        if scored:
            logits = body(input_ids=to_model_device(torch.tensor([ids[:position]]), body)).logits[0, -1]
            total += float(torch.log_softmax(logits.float(), dim=-1)[ids[position]])
    return total


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_choice_scores_equal_token_by_token_scores(mc_models, mc_data, tmp_path, variant):
    result = train(mc_config(mc_models["llama"], mc_data, tmp_path, VARIANTS[variant]))
    task, body = build_task(result.config), result.model.body
    body.eval()
    items = task.items(task.load_data().test)[:4]
    tokenizer = result.model.tokenizer
    pairs, owners = task.scoring_rows(items, tokenizer)
    pad = tokenizer.pad_token_id
    batched = score_rows(body, pairs, owners, len(items), 3, pad, batch_size=16)
    alone = score_rows(body, pairs, owners, len(items), 3, pad, batch_size=1)
    fast = [score_rows(body, pairs, owners, len(items), 3, pad, batch_size=size, share_context=True)
            for size in (16, 3)] if task.shares_context(body) else []
    with torch.no_grad():
        reference = [token_by_token(body, p.input_ids, p.target_mask) for p in pairs]
    for (n, i, _), expected in zip(owners, reference):
        assert batched.sums[n, i] == pytest.approx(expected, abs=1e-4)
        assert alone.sums[n, i] == pytest.approx(expected, abs=1e-4)
        for shared in fast:  # the context run once, the choices from its cache
            assert shared.sums[n, i] == pytest.approx(expected, abs=1e-4)
            assert shared.counts[n, i] == batched.counts[n, i]
    assert len({round(float(x), 3) for x in batched.sums.flatten()}) > 1, "scores that never differ test nothing"


@pytest.mark.parametrize("loss", ["choice", "lm"])
def test_training_ranks_the_gold_choice_first(mc_models, mc_data, tmp_path, loss):
    cfg = mc_config(mc_models["llama"], mc_data, tmp_path, {"name": "full"}, loss=loss)
    cfg = cfg.updated({"train.max_steps": 60, "train.learning_rate": 3e-3, "output.name": f"mc-{loss}"})
    untrained = train(cfg.updated({"train.max_steps": 1, "train.learning_rate": 1e-9, "output.name": f"mc-{loss}-0"}))
    result = train(cfg)
    before, after = untrained.metrics["accuracy"], result.metrics["accuracy"]
    assert after > before and after >= 0.6, (before, after)
    assert result.metrics["splits"]["test"]["rows"] == 24
    predictions = [json.loads(line) for line in (result.run_dir / "predictions" / "test.jsonl").read_text().splitlines()]
    right = sum(p["prediction"] == p["gold"] for p in predictions)
    assert right / len(predictions) == pytest.approx(after)
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-3 and len(p["choices"]) == 3 for p in predictions)


def test_an_encoder_is_refused_with_the_way_out(mc_models, mc_data, tmp_path):
    with pytest.raises(LmtuneError, match="needs a decoder.*classification of \\(question, choice\\) pairs"):
        train(mc_config(mc_models["bert"], mc_data, tmp_path, {"name": "lora"}))


def test_the_prompting_baseline_scores_choices_zero_and_few_shot(mc_models, mc_data, tmp_path):
    from lmtune.baselines import BASELINES

    cfg = mc_config(mc_models["llama"], mc_data, tmp_path, {"name": "lora"})
    results = {}
    for shots in (0, 2):
        baseline = BASELINES.build("prompting", BASELINES.config_class("prompting").model_validate(
            {"name": "prompting", "shots": shots}))
        results[shots] = baseline.run(cfg, tmp_path / f"prompting-{shots}")
    for shots, metrics in results.items():
        predictions = (tmp_path / f"prompting-{shots}" / "predictions" / "test.jsonl").read_text().splitlines()
        right = sum(json.loads(p)["prediction"] == json.loads(p)["gold"] for p in predictions)
        assert metrics["accuracy"] == pytest.approx(right / len(predictions)) and metrics["trainable_params"] == 0
    assert results[0]["accuracy"] != results[2]["accuracy"] or results[0]["loss"] != results[2]["loss"], \
        "two demonstrations before every question change the scores"


def test_predict_from_the_command_line_scores_the_given_choices(mc_models, mc_data, tmp_path, capsys):
    from lmtune.cli import main

    result = train(mc_config(mc_models["llama"], mc_data, tmp_path, {"name": "lora"}))
    assert main(["predict", str(result.run_dir), "--text", "copy red", "--pair", "blue|red|green"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["choices"] == ["blue", "red", "green"] and len(line["probabilities"]) == 3
    assert line["prediction"] == max(range(3), key=lambda i: line["loglikelihood"][i])
