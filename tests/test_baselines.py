"""Baselines for `lmtune compare`: TF-IDF, prompting (classification and generative), training from scratch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_raw_config, write_jsonl
from lmtune.baselines import BASELINES, register_baseline
from lmtune.baselines.prompting import LabelPrompts, label_scores
from lmtune.data.templates import ALPACA, ALPACA_WITH_INPUT
from lmtune.errors import LmtuneError
from lmtune.runconfig import resolve_config
from reference_scores import from_confusion_matrix, number_answers, read_predictions

HEADLINE_KEYS = {"accuracy", "macro_f1", "roc_auc", "pr_auc", "confusion_matrix", "loss", "rows"}
RUN_KEYS = {"eval_split", "splits", "trainable_params", "total_params", "trainable_percent", "artifact_bytes",
            "train_seconds", "peak_rss_mb", "method"}


def baseline(name: str, **options):
    return BASELINES.build(name, BASELINES.config_class(name).model_validate({"name": name, **options}))


def run_config(model_dir: Path | str, files: dict, out: Path, **extra):
    raw = tiny_raw_config(Path(model_dir), files, out, {"name": "lora"}, max_steps=2, eval_every="no")
    return resolve_config({**raw, **extra})


# ---- registry ------------------------------------------------------------------------------------------------


def test_registry_knows_the_three_and_suggests_close_names():
    assert set(BASELINES.all()) == {"tfidf", "prompting", "scratch"}
    with pytest.raises(ValueError, match="did you mean 'tfidf'"):
        BASELINES.get("tfdif")
    with pytest.raises(ValueError, match="registered twice"):
        register_baseline(BASELINES.get("tfidf"))
    with pytest.raises(ValueError, match="at least one n-gram range"):
        BASELINES.config_class("tfidf").model_validate({"name": "tfidf", "word_ngrams": None, "char_ngrams": None})
    with pytest.raises(ValueError, match="placed|exactly once"):
        BASELINES.config_class("prompting").model_validate({"name": "prompting", "template": "{text}"})


# ---- tfidf ---------------------------------------------------------------------------------------------------


def test_tfidf_learns_the_toy_task_and_writes_metrics_last(tmp_path, toy_data):
    out = tmp_path / "tfidf"
    metrics = baseline("tfidf", stop_words="english").run(run_config("minilm", toy_data, tmp_path), out)
    assert metrics["accuracy"] > 0.8 and metrics["method"] == "tfidf"  # one sentiment word decides: easy data
    assert metrics["accuracy"] == pytest.approx(from_confusion_matrix(metrics["confusion_matrix"])["accuracy"])
    assert HEADLINE_KEYS | RUN_KEYS <= set(metrics)
    assert metrics["eval_split"] == "validation" and metrics["splits"]["validation"]["rows"] == 32
    assert metrics["trainable_params"] == metrics["total_params"] > 0 and metrics["artifact_bytes"] == 0
    saved_metrics, saved_config = out / "metrics.json", out / "config.yaml"
    assert json.loads(saved_metrics.read_text()) == json.loads(json.dumps(metrics))
    assert saved_metrics.stat().st_mtime_ns >= saved_config.stat().st_mtime_ns
    config = yaml.safe_load(saved_config.read_text())
    assert config["baseline"]["stop_words"] == "english" and config["data"]["labels"] == ["neg", "pos"]
    with pytest.raises(LmtuneError, match="finished baseline"):
        baseline("tfidf").run(run_config("minilm", toy_data, tmp_path), out)


def test_tfidf_refuses_tasks_other_than_classification(tmp_path, toy_data):
    cfg = run_config("minilm", toy_data, tmp_path, task={"name": "instruction"})
    with pytest.raises(LmtuneError, match="task.name=classification"):
        baseline("tfidf").run(cfg, tmp_path / "tfidf")


# ---- prompting: classification ---------------------------------------------------------------------------------


def test_a_k_shot_prompt_holds_k_demonstrations(tmp_path, toy_data):
    cfg = run_config("minilm", toy_data, tmp_path)
    from datasets import Dataset

    train = Dataset.from_list([json.loads(line) for line in toy_data["train"].read_text().splitlines()])
    prompting = baseline("prompting", shots=3, seed=7, verbalizers={"pos": "great"}, template="{text}\nAnswer: {label}")
    prompts = prompting.prompts(cfg, ["neg", "pos"], train)
    prompt, gap = prompts.context({"text": "so very lovely", "pair": None})
    assert prompt.count("Answer:") == 4 and prompt.endswith("so very lovely\nAnswer:") and gap == " "
    demos = prompt.split("\n\n")[:3]
    assert all(d.rsplit("Answer: ", 1)[1] in ("great", "neg") for d in demos)
    assert all(d.split("\nAnswer:")[0] in train["text"] for d in demos)
    assert prompting.prompts(cfg, ["neg", "pos"], train).prefix == prompts.prefix  # seeded
    assert baseline("prompting", shots=3, seed=8).prompts(cfg, ["neg", "pos"], train).prefix != prompts.prefix
    default = baseline("prompting").prompts(cfg, ["neg", "pos"], train)
    assert default.context({"text": "so very lovely", "pair": None})[0] == "so very lovely\nQuestion: neg or pos?\nAnswer:"
    pairs = LabelPrompts("Q: {text} / {pair}\nA: {label}", ["no", "yes"], {}, [({"text": "a", "pair": "b"}, "yes")])
    assert pairs.context({"text": "c", "pair": "d"})[0] == "Q: a / b\nA: yes\n\nQ: c / d\nA:"


def test_label_scores_do_not_depend_on_batching(tiny_models):
    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import load_backbone

    backbone = load_backbone(ModelConfig(name=str(tiny_models["llama"])), "AutoModelForCausalLM")
    prompts = LabelPrompts("{text} is {label}", ["neg", "pos"], {"neg": "awful bad", "pos": "great"},
                           [({"text": "it was great", "pair": None}, "pos")])
    rows = [{"text": t, "pair": None} for t in ("the item", "this product was really very quite sad", "happy")]
    batched, cut = label_scores(backbone, prompts, rows, 64, "sum", max_rows=16)
    single, _ = label_scores(backbone, prompts, rows, 64, "sum", max_rows=1)
    mean, _ = label_scores(backbone, prompts, rows, 64, "mean", max_rows=16)
    assert batched.shape == (3, 2) and cut == 0 and np.isfinite(batched).all()
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, batched / [2, 1], rtol=1e-5)  # "awful bad" is two tokens
    _, cut = label_scores(backbone, prompts, rows, 6, "sum", max_rows=16)
    assert cut == 3  # every prompt was longer than 6 tokens and lost its oldest ones


def test_prompting_classifies_with_the_untuned_decoder(tmp_path, tiny_models, toy_data):
    cfg = run_config(tiny_models["llama"], toy_data, tmp_path)
    metrics = baseline("prompting", shots=2, verbalizers={"pos": "great", "neg": "awful"}).run(cfg, tmp_path / "p")
    assert HEADLINE_KEYS | RUN_KEYS <= set(metrics)
    assert metrics["trainable_params"] == 0 and metrics["total_params"] > 0 and metrics["method"] == "prompting"
    gold = [json.loads(line)["label"] for line in toy_data["validation"].read_text().splitlines()]
    matrix = metrics["confusion_matrix"]
    # every validation row scored once, on its own true label's row; accuracy and macro-F1 agree with the matrix
    assert [sum(row) for row in matrix] == [gold.count("neg"), gold.count("pos")]
    assert {k: metrics[k] for k in ("accuracy", "macro_f1")} == pytest.approx(from_confusion_matrix(matrix))
    assert metrics["details"]["verbalizers"] == {"neg": "awful", "pos": "great"}
    assert (tmp_path / "p" / "metrics.json").is_file()


def test_prompting_probabilities_are_a_softmax_over_labels():
    from lmtune.baselines.prompting import split_metrics

    scores = np.log(np.array([[0.2, 0.6], [0.9, 0.3]]))
    metrics = split_metrics(scores, ["neg", "pos"], ["pos", "neg"])
    assert metrics["accuracy"] == 1.0
    assert metrics["loss"] == pytest.approx(-np.mean(np.log([0.75, 0.75])))  # 0.6/(0.2+0.6), 0.9/(0.9+0.3)


def test_prompting_an_encoder_picks_the_nearest_label_embedding(tmp_path, tiny_models, toy_data):
    """Encoders cannot continue a prompt: zero-shot they compare each text with the label words' embeddings,
    with k shots with the mean embedding of each label's demonstrations."""
    from lmtune.baselines.similarity import embed, prototypes
    from lmtune.models.loading import load_backbone

    cfg = run_config(tiny_models["bert"], toy_data, tmp_path)
    metrics = baseline("prompting", shots=4).run(cfg, tmp_path / "a")
    assert metrics["details"]["scored_by"] == "embedding similarity" and metrics["trainable_params"] == 0
    assert sum(map(sum, metrics["confusion_matrix"])) == 32
    backbone = load_backbone(cfg.model)
    demos = [({"text": "great great", "pair": None}, "pos"), ({"text": "awful", "pair": None}, "neg")]
    centres = prototypes(backbone, ["neg", "pos", "other"], {"other": "sad"}, demos, 32, 8)
    expected = embed(backbone, [("awful", None), ("great great", None), ("sad", None)], 32, 8)
    assert torch.allclose(centres, expected, atol=1e-5)


def test_prompting_refuses_tagging(tmp_path, tiny_models, toy_data):
    tagging = run_config(tiny_models["llama"], toy_data, tmp_path, task={"name": "token_classification"})
    with pytest.raises(LmtuneError, match="does not apply to the token_classification task"):
        baseline("prompting").run(tagging, tmp_path / "b")


# ---- prompting: generative ---------------------------------------------------------------------------------------


def copy_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"instruction": f"copy {w} {n}", "input": "", "output": f"the answer is {n}", "answer": str(n)}
            for w, n in ((rng.choice(["red", "blue", "green"]), rng.randint(0, 9)) for _ in range(count))]


@pytest.fixture(scope="module")
def instruction_setup(tmp_path_factory):
    from lmtune.models.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("instruction")
    data = {split: write_jsonl(folder / f"{split}.jsonl", copy_rows(n, seed))
            for split, n, seed in (("train", 24, 1), ("validation", 4, 2), ("test", 4, 3))}
    texts = [ALPACA, ALPACA_WITH_INPUT, "copy red blue green the answer is 0 1 2 3 4 5 6 7 8 9"]
    return build_tiny_model("llama", folder / "llama", texts), data


def test_prompting_a_generative_task_zero_and_few_shot(tmp_path, instruction_setup):
    model, data = instruction_setup
    cfg = run_config(model, data, tmp_path, task={"name": "instruction", "generation": {"max_new_tokens": 4}},
                     data={k: str(v) for k, v in data.items()}, model={"name": str(model), "max_length": 64})
    zero = baseline("prompting").run(cfg, tmp_path / "zero")
    few = baseline("prompting", shots=2).run(cfg, tmp_path / "few")
    for metrics, folder in ((zero, "zero"), (few, "few")):
        assert metrics["eval_split"] == "test" and metrics["rows"] == 4
        assert metrics["trainable_params"] == 0 and "loss" in metrics["splits"]["validation"]
        predictions = read_predictions(tmp_path / folder, metrics)
        assert [p["gold"] for p in predictions] == [r["answer"] for r in copy_rows(4, 3)]
        assert {k: metrics[k] for k in ("accuracy", "correct", "no_answer")} == pytest.approx(number_answers(predictions))
    assert yaml.safe_load((tmp_path / "few" / "config.yaml").read_text())["model"]["max_length"] == 3 * 64


def test_few_shot_template_puts_the_demonstrations_first(instruction_setup, tmp_path):
    from lmtune.data.templates import AlpacaTemplate
    from lmtune.runconfig import build_task

    model, data = instruction_setup
    task = build_task(run_config(model, data, tmp_path, task={"name": "instruction"}, data={"train": str(data["train"])}))
    examples = task.examples(task.read_split("train"))
    assert task.template(None).prompt(examples[2]) == AlpacaTemplate().prompt(examples[2])  # zero-shot: unchanged
    task.demonstrations = examples[:2]
    prompt = task.template(None).prompt(examples[2])
    assert prompt.count("### Response:") == 3 and prompt.endswith(AlpacaTemplate().prompt(examples[2]))
    assert prompt.startswith(AlpacaTemplate().prompt(examples[0]) + examples[0].output + "\n\n")
    assert task.template(None).response(examples[2]) == examples[2].output


# ---- scratch ---------------------------------------------------------------------------------------------------


def test_scratch_trains_the_architecture_from_random_weights(tmp_path, tiny_models, toy_data):
    from safetensors.torch import load_file

    cfg = run_config(tiny_models["bert"], toy_data, tmp_path, method={"name": "lora", "rank": 2})
    metrics = baseline("scratch").run(cfg, tmp_path / "scratch")
    run_dir = tmp_path / "scratch"
    assert metrics["method"] == "scratch" and metrics["trained_with"] == "full"
    assert metrics["global_step"] == cfg.train.max_steps  # it trained, for the steps the comparison gives
    assert json.loads((run_dir / "metrics.json").read_text())["method"] == "scratch"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["init"] == "random" and config["method"]["name"] == "full"
    assert metrics["trainable_params"] == metrics["total_params"]
    key = "embeddings.word_embeddings.weight"
    trained = load_file(str(run_dir / "model" / "model.safetensors"))[key]
    pretrained = load_file(str(tiny_models["bert"] / "model.safetensors"))
    original = next(v for k, v in pretrained.items() if k.endswith(key))
    assert trained.shape == original.shape and not np.allclose(trained.numpy(), original.numpy())
