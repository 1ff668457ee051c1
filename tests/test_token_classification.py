"""Token classification: the CoNLL reader, sub-token label alignment, entity metrics, and short tagging runs
through every kind of strategy (prompt methods prepend virtual tokens the head must skip)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from transformers import TrainerCallback

from conftest import (
    FILLER,
    NEGATIVE,
    POSITIVE,
    SHARED_DATA,
    tiny_raw_config,
    write_jsonl,
)
from lmtune.data.conll import read_conll, resolve_tag_set
from lmtune.errors import LmtuneError
from lmtune.models.loading import load_tokenizer
from lmtune.runconfig import build_task, resolve_config
from lmtune.tasks.token_classification import (
    IGNORE,
    align_labels,
    continuation_ids,
    entities,
    tag_metrics,
)
from lmtune.train import train
from lmtune.train.artifacts import load_run
from lmtune.train.rundir import LOG_FILE
from reference_scores import read_predictions, seqeval_scores

WNUT = SHARED_DATA / "wnut17"
TAGS = ["O", "B-NEG", "B-POS", "I-POS"]
WORDS = [w for w in FILLER if w != "item"]  # "item" only ever continues a POS entity


def toy_sentences(count: int, seed: int) -> list[dict]:
    """Filler words around a positive word (B-POS, sometimes + "item" as I-POS, sometimes hyphenated so it splits
    into sub-tokens) and a negative word (B-NEG): learnable from the words themselves."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        tokens = rng.choices(WORDS, k=rng.randint(2, 5))
        tags = ["O"] * len(tokens)
        positive = rng.choice(POSITIVE)
        entity = ([f"really-{positive}"] if rng.random() < 0.3 else [positive]) + (["item"] if rng.random() < 0.5 else [])
        at = rng.randint(0, len(tokens))
        tokens[at:at] = entity
        tags[at:at] = ["B-POS", "I-POS"][: len(entity)]
        at = rng.randint(0, len(tokens))
        tokens.insert(at, rng.choice(NEGATIVE))
        tags.insert(at, "B-NEG")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def write_conll(path: Path, rows: list[dict], bom: bool = False, docstart: bool = False) -> Path:
    lines = ["-DOCSTART- -X- O O", ""] if docstart else []
    for row in rows:
        lines += [f"{token}\t{tag}" for token, tag in zip(row["tokens"], row["tags"])] + [""]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines).rstrip("\n"), encoding="utf-8")  # no final blank line
    return path


@pytest.fixture(scope="module")
def tagging_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tagging-data")
    return {
        "train": write_conll(folder / "train.conll", toy_sentences(96, seed=1)),
        "validation": write_jsonl(folder / "validation.jsonl", toy_sentences(32, seed=2)),
    }


def tagging_config(model_dir: Path, data: dict[str, Path], out: Path, method: dict, **train_options):
    raw = tiny_raw_config(model_dir, {"validation": None, **data}, out, method, **train_options)
    raw["task"] = {"name": "token_classification"}
    if "validation" not in data:
        del raw["data"]["validation"]
    return resolve_config(raw)


# --- reading -------------------------------------------------------------------------------------------------------


def test_conll_reader_handles_docstart_bom_blank_runs_and_a_trailing_sentence(tmp_path):
    path = tmp_path / "data.conll"
    path.write_text("\ufeff-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\t\n\nPeter\tB-PER\nBlackburn\tI-PER", encoding="utf-8")
    table = read_conll(path)
    assert table["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert table["tags"] == [["B-ORG", "O"], ["B-PER", "I-PER"]]


def test_conll_reader_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("EU\tB-ORG\nrejects\n", encoding="utf-8")
    with pytest.raises(LmtuneError, match=r"bad\.conll, line 2: expected a token and a tag"):
        read_conll(bad)
    (tmp_path / "empty.conll").write_text("\n\n", encoding="utf-8")
    with pytest.raises(LmtuneError, match="empty"):
        read_conll(tmp_path / "empty.conll")
    with pytest.raises(LmtuneError, match="does not exist"):
        read_conll(tmp_path / "missing.conll")


@pytest.mark.skipif(not (WNUT / "train.conll").is_file(), reason="needs ../shared/data/wnut17")
def test_wnut17_files_read_to_the_published_counts():
    counts = {split: len(read_conll(WNUT / f"{split}.conll")) for split in ("train", "dev", "test")}
    assert counts == {"train": 3394, "dev": 1009, "test": 1287}
    tags = resolve_tag_set(read_conll(WNUT / "train.conll")["tags"], None)
    kinds = ["corporation", "creative-work", "group", "location", "person", "product"]
    assert tags[0] == "O" and sorted(tags[1:]) == sorted(f"{p}-{k}" for k in kinds for p in "BI")


def test_an_unknown_tag_in_validation_is_refused_clearly(tiny_models, tagging_data, tmp_path):
    rows = toy_sentences(4, seed=3)
    rows[2]["tags"][0] = "B-MISC"
    data = {"train": tagging_data["train"], "validation": write_jsonl(tmp_path / "validation.jsonl", rows)}
    with pytest.raises(LmtuneError, match=r"validation data has tags outside .*'B-MISC' \(1 tokens\).*data\.labels"):
        build_task(tagging_config(tiny_models["bert"], data, tmp_path, {"name": "full"})).load_data()


def test_a_sentence_with_fewer_tags_than_tokens_is_refused(tiny_models, tagging_data, tmp_path):
    rows = toy_sentences(4, seed=3)
    rows[1]["tags"].pop()
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "validation": tagging_data["validation"]}
    with pytest.raises(LmtuneError, match="sentence 2: .* tokens but .* tags"):
        build_task(tagging_config(tiny_models["bert"], data, tmp_path, {"name": "full"})).load_data()


def test_tag_set_defaults_and_a_split_off_validation(tiny_models, tagging_data, tmp_path):
    cfg = tagging_config(tiny_models["bert"], {"train": tagging_data["train"]}, tmp_path, {"name": "full"})
    task = build_task(cfg.updated({"data.validation_fraction": 0.25}))
    splits = task.load_data()
    assert task.cfg.eval.metric == "f1" and task.cfg.model.max_length == 32
    assert task.cfg.data.labels == TAGS, "O first, then the other tags sorted"
    assert (len(splits.train), len(splits.validation)) == (72, 24)


# --- alignment and metrics -----------------------------------------------------------------------------------------


def test_labels_go_on_the_first_sub_token_of_each_word(tiny_models):
    tokenizer = load_tokenizer(tiny_models["bert"])
    assert tokenizer.is_fast
    encoding = tokenizer([["the", "really-great", "item"]], is_split_into_words=True)
    word_ids = encoding.word_ids(0)
    assert word_ids == [None, 0, 1, 1, 1, 2, None], "the hyphenated word splits into three sub-tokens"
    tag_ids = [TAGS.index(t) for t in ("O", "B-POS", "I-POS")]
    o, b, i = tag_ids
    assert align_labels(word_ids, tag_ids, None) == [IGNORE, o, b, IGNORE, IGNORE, i, IGNORE]
    assert align_labels(word_ids, tag_ids, continuation_ids(TAGS)) == [IGNORE, o, b, i, i, i, IGNORE]


def test_entity_metrics_on_known_sequences():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["O", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG", "O", "O"], ["O", "O"]]  # right, wrong type, missed
    metrics = tag_metrics(gold, predicted)
    assert metrics["precision"] == pytest.approx(1 / 2) and metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(0.4) and metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert metrics["per_type"]["LOC"]["recall"] == 0.0 and metrics["per_type"]["ORG"]["precision"] == 0.0
    assert entities(["Peter", "Blackburn", "in", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]) == [
        {"type": "PER", "start": 0, "end": 2, "text": "Peter Blackburn"},
        {"type": "LOC", "start": 3, "end": 4, "text": "Paris"},
    ]


def test_trainer_metrics_skip_padding_between_batches(tiny_models, tagging_data, tmp_path):
    task = build_task(tagging_config(tiny_models["bert"], tagging_data, tmp_path, {"name": "full"}))
    task.load_data()
    labels = np.array([[IGNORE, 2, 3, 0, IGNORE], [IGNORE, 1, IGNORE, IGNORE, IGNORE]])  # row 2 padded by Trainer
    logits = np.eye(len(TAGS))[np.where(labels == IGNORE, 0, labels)]
    logits[1, 1] = np.eye(len(TAGS))[0]  # the B-NEG word predicted O: one entity missed
    metrics = task.compute_metrics(logits, labels)
    assert (metrics["precision"], metrics["recall"], metrics["accuracy"]) == (1.0, 0.5, 0.75)


# --- training through the strategies -------------------------------------------------------------------------------

STRATEGIES = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "rank": 4},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 4},
    "bottleneck": {"name": "bottleneck", "bottleneck_size": 8},
}


class TrainLossBefore(TrainerCallback):
    def __init__(self, task, table):
        self.task, self.table, self.loss = task, table, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.loss = self.task.evaluate(model, self.table, 64)["loss"]
        model.train()


@pytest.mark.parametrize("variant", list(STRATEGIES))
def test_tagging_trains_saves_and_predicts(tiny_models, tagging_data, tmp_path, variant):
    cfg = tagging_config(tiny_models["bert"], tagging_data, tmp_path, STRATEGIES[variant], max_steps=8,
                         learning_rate=2e-2, warmup_ratio=0.0, eval_every="steps", eval_steps=4)
    task = build_task(cfg)
    table = task.load_data().train
    before = TrainLossBefore(task, table)
    result = train(cfg, callbacks=[before])
    assert task.evaluate(result.model, table, 64)["loss"] < before.loss
    metrics = result.metrics
    assert metrics["rows"] == 32 and set(metrics["per_type"]) <= {"POS", "NEG"}
    logged = [json.loads(line) for line in (result.run_dir / LOG_FILE).read_text().splitlines()]
    assert any("eval_f1" in entry for entry in logged), "the Trainer computes entity F1 at each evaluation"
    predictions = read_predictions(result.run_dir, metrics)
    first = predictions[0]
    assert set(first) == {"tokens", "gold", "predicted"} and len(first["predicted"]) == len(first["tokens"])
    # every sentence scored against its own gold tags, words lost to truncation included
    assert [(p["tokens"], p["gold"]) for p in predictions] == [(r["tokens"], r["tags"]) for r in toy_sentences(32, seed=2)]
    assert {k: metrics[k] for k in ("precision", "recall", "f1")} == pytest.approx(seqeval_scores(predictions))

    rows = [{"tokens": r["tokens"]} for r in toy_sentences(6, seed=4)] + [{"text": "the really-great item was bad"}]
    expected = task.predict(result.model, rows)
    loaded = load_run(result.run_dir)
    got = loaded.task.predict(loaded.model, rows)
    assert [p["tags"] for p in got] == [p["tags"] for p in expected]
    assert got[-1]["tokens"] == ["the", "really-great", "item", "was", "bad"]
    assert all(set(e) == {"type", "start", "end", "text"} for p in got for e in p["entities"])


def test_words_past_max_length_are_tagged_outside(tiny_models, tagging_data, tmp_path):
    cfg = tagging_config(tiny_models["bert"], tagging_data, tmp_path, {"name": "freeze"}, max_steps=1, eval_every="no")
    cfg = cfg.updated({"model.max_length": 6})
    result = train(cfg)
    task = build_task(result.config)
    task.load_data()
    predicted = task.predict(result.model, [{"tokens": ["great"] * 10}])[0]["tags"]
    assert len(predicted) == 10 and predicted[4:] == ["O"] * 6, "[CLS] + 4 words + [SEP] fit in 6 tokens"
