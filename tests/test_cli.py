"""The command line end to end on a tiny model: train → eval → predict, methods, config."""

import json

import pytest
import yaml

from conftest import tiny_raw_config
from lmtune.cli import main
from lmtune.results import read_metrics
from reference_scores import from_confusion_matrix


def test_train_eval_predict(tiny_models, toy_data, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    raw = tiny_raw_config(tiny_models["llama"], toy_data, tmp_path / "runs", {"name": "lora"}, max_steps=4)
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config), "method.rank=2", "train.learning_rate=5e-3"]) == 0
    run_dir = tmp_path / "runs" / "lora"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["method"]["rank"] == 2 and saved["train"]["learning_rate"] == 5e-3
    assert saved["data"]["labels"] == ["neg", "pos"], "the resolved label set is saved with the run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "roc_auc", "pr_auc", "confusion_matrix", "trainable_params", "total_params",
                "artifact_bytes", "adapter_bytes", "train_seconds", "peak_rss_mb"):
        assert metrics[key] is not None, key
    assert read_metrics(run_dir).global_step == 4  # the file has its typed shape: every field, of its type
    assert metrics["accuracy"] == pytest.approx(from_confusion_matrix(metrics["confusion_matrix"])["accuracy"])
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert len(provenance["base_model"]["weights_sha256"]) == 64 and len(provenance["data_sha256"]) == 64
    assert (run_dir / "adapter_config.json").is_file() and (run_dir / "train_log.jsonl").is_file()
    assert not (run_dir / "checkpoints").exists(), "checkpoints are cleaned after a finished run"
    capsys.readouterr()

    assert main(["eval", str(run_dir)]) == 0
    assert "accuracy" in capsys.readouterr().out
    recorded = json.loads((run_dir / "metrics.json").read_text())["evaluations"][-1]
    assert recorded["accuracy"] == metrics["splits"]["validation"]["accuracy"], "re-evaluation reproduces training's numbers"

    assert main(["predict", str(run_dir), "--text", "a great item", "--text", "awful and broken"]) == 0
    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in lines] == ["a great item", "awful and broken"]
    for line in lines:
        assert line["label"] in ("neg", "pos") and abs(sum(line["probabilities"].values()) - 1) < 1e-5

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "so great"}) + "\n")
    assert main(["predict", str(run_dir), "--file", str(rows)]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")


def test_errors_print_without_traceback(tmp_path, capsys):
    assert main(["train", "trian.epochs=3"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_methods_lists_every_strategy_with_options(capsys):
    from lmtune.methods import STRATEGIES

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in STRATEGIES.all().items():
        assert f"{name}  —" in out
        for field in cls.config_cls.model_fields:
            assert field == "name" or f"{field} = " in out


def test_config_prints_the_resolved_config(capsys):
    assert main(["config", "method.name=prefix_tuning"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["method"] == {"name": "prefix_tuning", "num_virtual_tokens": 20, "prefix_projection": False, "encoder_hidden_size": 512}


def test_quickstart_flow_on_a_tiny_model(tiny_models, tmp_path, capsys):
    # The real quickstart trains MiniLM for minutes (`make run`); here the same flow runs on a tiny model.
    assert main(["quickstart", "--output", str(tmp_path), f"model.name={tiny_models['bert']}", "train.max_steps=2",
                 "train.progress=false", "train.num_threads=1"]) == 0
    out = capsys.readouterr().out
    assert "report: " in out and (tmp_path / "report.html").is_file()
    rows = {row["name"]: row for row in json.loads((tmp_path / "leaderboard.json").read_text())}
    assert set(rows) == {"freeze (head only)", "lora", "p_tuning", "tfidf", "prompting", "scratch"}
    for name in ("freeze-head-only", "lora", "p_tuning", "tfidf", "scratch"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["eval_split"] == "test" and metrics["splits"]["test"]["rows"] == 120
