"""`lmtune compare`: strategies and baselines side by side on a tiny model; resume; sweeps; failures recorded."""

from __future__ import annotations

import json

import pytest
import yaml

from browser import browser_ready, open_page
from lmtune.cli import main
from lmtune.compare.config import CompareConfig, expand
from lmtune.compare.runner import load_compare_config, run_compare
from lmtune.errors import LmtuneError
from reference_scores import from_confusion_matrix


def compare_yaml(tmp_path, tiny_models, toy_data, **extra) -> str:
    raw = {
        "base": {
            "model": {"name": str(tiny_models["llama"]), "max_length": 32},
            "data": {"train": str(toy_data["train"]), "validation": str(toy_data["validation"])},
            "train": {"batch_size": 16, "progress": False, "num_threads": 1, "max_steps": 4, "eval_every": "no",
                      "logging_steps": 1},
        },
        "strategies": [
            {"name": "lora", "overrides": ["method.name=lora", "method.rank=2"]},
            {"name": "freeze", "overrides": ["method.name=freeze"]},
        ],
        "baselines": [{"name": "tfidf"}, {"name": "prompting"}, {"name": "scratch"}],
        "output": {"dir": str(tmp_path / "cmp")},
        **extra,
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_compare_runs_strategies_and_baselines_then_resumes(tmp_path, tiny_models, toy_data, capsys):
    config = compare_yaml(tmp_path, tiny_models, toy_data)
    assert main(["compare", config]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "cmp"
    rows = json.loads((folder / "leaderboard.json").read_text())
    assert sorted(r["name"] for r in rows) == ["freeze", "lora", "prompting", "scratch", "tfidf"]
    for row in rows:
        assert row["status"] == "done", row
        saved = json.loads((folder / row["name"] / "metrics.json").read_text())  # plain names: folder = name
        # the row carries its run's numbers, and the accuracy is the one its confusion matrix gives
        assert (row["accuracy"], row["train_seconds"], row["trainable_params"]) == (
            saved["accuracy"], saved["train_seconds"], saved["trainable_params"])
        assert row["accuracy"] == pytest.approx(from_confusion_matrix(saved["confusion_matrix"])["accuracy"])
    best = max(r["accuracy"] for r in rows)
    assert [r["accuracy"] for r in rows] == sorted((r["accuracy"] for r in rows), reverse=True)
    assert [r["gap_to_best"] for r in rows] == pytest.approx([r["accuracy"] - best for r in rows])
    assert [r for r in rows if r["name"] == "prompting"][0]["trainable_params"] == 0
    assert (folder / "leaderboard.csv").read_text().count("\n") >= 6
    assert (folder / "report.html").is_file() and "report:" in out
    if browser_ready():  # the resume checks below run either way
        with open_page(folder / "report.html") as (page, problems, _):
            assert page.locator("#leaderboard-table tbody tr").count() == 5
            for chart in ("chart-main-metric", "chart-time", "chart-loss-lora", "chart-confusion-tfidf"):
                assert page.locator(f"figure#{chart} svg").bounding_box()["width"] > 100, chart
        assert not problems, problems

    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/metrics.json")}
    assert main(["compare", config]) == 0
    assert "not re-run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/metrics.json")} == stamps


def test_a_failing_entry_is_recorded_and_the_rest_run(tmp_path, tiny_models, toy_data):
    config = compare_yaml(tmp_path, tiny_models, toy_data, baselines=[{"name": "tfidf"}])
    cfg = load_compare_config(config, ["strategies=[{name: broken, overrides: [method.name=freeze, method.train_last_layers=99]}]"])
    result = run_compare(cfg)
    by_name = {r["name"]: r for r in result.rows}
    assert by_name["broken"]["status"] == "failed" and "99" in by_name["broken"]["error"]
    assert by_name["tfidf"]["status"] == "done"
    assert result.rows[-1]["name"] == "broken"


def test_sweeps_expand_into_one_entry_per_value():
    cfg = CompareConfig.model_validate({
        "strategies": [{"name": "lora", "overrides": ["method.name=lora"], "sweep": {"method.rank": [4, 8]}}],
        "baselines": [{"name": "prompting", "label": "zero-shot"}, {"name": "prompting", "shots": 4, "label": "4-shot"}],
    })
    entries = expand(cfg)
    assert [e.name for e in entries] == ["lora rank=4", "lora rank=8", "zero-shot", "4-shot"]
    assert entries[1].overrides == ["method.name=lora", "method.rank=8"]
    assert entries[3].baseline == {"name": "prompting", "shots": 4}


def test_bad_compare_configs_say_what_to_fix(tmp_path, tiny_models, toy_data):
    config = compare_yaml(tmp_path, tiny_models, toy_data)
    with pytest.raises(LmtuneError, match="did you mean 'tfidf'"):
        load_compare_config(config, ["baselines=[{name: tfdif}]"])
    with pytest.raises(LmtuneError, match="did you mean 'strategies'"):
        load_compare_config(config, ["stratgies=[]"])
    with pytest.raises(LmtuneError, match="did you mean 'train'"):
        load_compare_config(config, ["base.trian.epochs=1"])
    cfg = load_compare_config(config, ["strategies=[{name: a}, {name: a}]"])
    with pytest.raises(LmtuneError, match="repeated: a"):
        run_compare(cfg)
