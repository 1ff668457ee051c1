"""`lmtune tune` on tiny models: every algorithm runs a small study to completion; CV scores are fold means; a
killed study resumes without re-running finished trials; PBT exploits (copies a better member's checkpoint);
two workers share one SQLite study; bad input fails before any trial runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from browser import browser_ready, open_page
from conftest import tiny_raw_config
from lmtune.cli import main
from lmtune.errors import LmtuneError
from lmtune.results import read_metrics
from lmtune.tune.study import load_study_config, run_study, validate_study

pytest.importorskip("optuna", reason="lmtune tune needs its extra: pip install -e '.[tune]'")
ROOT = Path(__file__).resolve().parents[1]
LR = {"low": 1.0e-4, "high": 1.0e-1, "log": True}


def study_raw(tmp_path, tiny_models, toy_data, steps: int = 4, **extra) -> dict:
    base = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path / "unused", {"name": "lora", "rank": 2},
                           max_steps=steps, eval_every="no")
    raw = {"base": base, "space": {"train.learning_rate": LR, "method.rank": [2, 4, 8]},
           "objective": {"metric": "loss", "direction": "minimize"}, "budget": {"trials": 3},
           "output": {"dir": str(tmp_path / "study")}}
    for key, value in extra.items():
        raw[key] = value
    return raw


def write_study(tmp_path, raw) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def metrics_stamps(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.glob("trials/**/metrics.json")}


def test_bad_input_fails_before_any_trial(tmp_path, tiny_models, toy_data):
    raw = study_raw(tmp_path, tiny_models, toy_data)
    typo = {**raw, "space": {"train.learnig_rate": LR}}
    with pytest.raises(LmtuneError, match="(?s)space key train.learnig_rate.*did you mean 'learning_rate'"):
        run_study(validate_study(typo))
    with pytest.raises(LmtuneError, match="did you mean 'budget'"):
        validate_study({**raw, "budgett": {"trials": 2}})
    with pytest.raises(LmtuneError, match="did you mean 'tpe'"):
        validate_study({**raw, "algorithm": "tpee"})
    with pytest.raises(LmtuneError, match="method.rank shapes the model"):
        run_study(validate_study({**raw, "algorithm": "pbt"}))
    with pytest.raises(LmtuneError, match="grid search needs a finite set of values for train.learning_rate"):
        run_study(validate_study({**raw, "algorithm": "grid"}))
    with pytest.raises(LmtuneError, match="method.rank: .*greater than 0"):
        run_study(validate_study({**raw, "space": {"method.rank": [0, 4]}}))
    assert not (tmp_path / "study" / "trials").exists()
    # an objective that names no metric stops the study after its first run, naming what exists
    with pytest.raises(LmtuneError, match="did you mean 'accuracy'.*macro_f1"):
        run_study(validate_study({**raw, "objective": {"metric": "acuracy"}, "budget": {"trials": 1},
                                  "output": {"dir": str(tmp_path / "s2")}}))


def test_tpe_study_writes_summary_trials_rerun_alone_and_resume_skips_them(tmp_path, tiny_models, toy_data, capsys):
    path = write_study(tmp_path, study_raw(tmp_path, tiny_models, toy_data, reference=True))
    assert main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "study"
    assert out.count("best ") >= 3 and "reference (base config)" in out  # one line per trial
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trials"]["complete"] == 3
    reference_run = read_metrics(folder / summary["reference"]["dir"] / "run")  # the objective is the loss
    assert summary["reference"]["score"] == pytest.approx(reference_run.headline.loss)
    rows = (folder / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("number,state,score")
    best = yaml.safe_load((folder / "best_config.yaml").read_text())
    assert best["method"]["rank"] == summary["best"]["params"]["method.rank"]
    if browser_ready():  # the re-run and resume checks below run either way
        with open_page(folder / "report.html") as (page, problems, _):
            assert page.locator("figure#chart-objective svg").bounding_box()["width"] > 100
            assert page.locator("#trials-table tbody tr").count() == 3
        assert not problems, problems
    # any trial re-runs alone with `lmtune train` and gives the same result
    trial = folder / summary["best"]["dir"]
    assert main(["train", str(trial / "config.yaml"), "output.name=rerun"]) == 0
    again = json.loads((trial / "rerun" / "metrics.json").read_text())
    assert again["loss"] == pytest.approx(summary["best"]["score"], abs=1e-5)
    stamps = metrics_stamps(folder)
    result = run_study(load_study_config(path))  # the budget is spent: nothing runs again
    assert len([r for r in result.records if r.state == "complete"]) == 3
    assert metrics_stamps(folder) == stamps


@pytest.mark.parametrize("algorithm", ["random", "grid"])
def test_random_and_grid_run_to_completion(tmp_path, tiny_models, toy_data, algorithm):
    space = {"train.learning_rate": [1.0e-3, 3.0e-2], "method.rank": {"low": 2, "high": 4, "step": 2}}
    raw = study_raw(tmp_path, tiny_models, toy_data, algorithm=algorithm, space=space, budget={"trials": 5},
                    storage="memory" if algorithm == "random" else None)  # in memory, or the default SQLite file
    result = run_study(validate_study(raw))
    done = [r for r in result.records if r.state == "complete"]
    if algorithm == "grid":  # 2 x 2 combinations: the grid is done before the budget
        assert sorted((r.params["train.learning_rate"], r.params["method.rank"]) for r in done) == [
            (1.0e-3, 2), (1.0e-3, 4), (3.0e-2, 2), (3.0e-2, 4)]
    else:
        assert len(done) == 5 and all(r.params["method.rank"] in (2, 4) for r in done)
    for record in done:  # each trial's resolved config holds its parameters
        cfg = yaml.safe_load((result.folder / record.dir / "run" / "config.yaml").read_text())
        assert cfg["method"]["rank"] == record.params["method.rank"]
        assert cfg["train"]["learning_rate"] == record.params["train.learning_rate"]


def test_cv_scores_are_means_over_stratified_folds(tmp_path, tiny_models, toy_data):
    raw = study_raw(tmp_path, tiny_models, toy_data, budget={"trials": 2}, cv={"folds": 3})
    result = run_study(validate_study(raw))
    folder = result.folder
    manifest = json.loads((folder / "folds" / "manifest.json").read_text())
    assert manifest["kind"] == "stratified" and [s["validation"] for s in manifest["sizes"]] == [32, 32, 32]
    held_out = [json.loads(line)["text"] for k in range(3)
                for line in (folder / "folds" / f"fold-{k}" / "validation.jsonl").read_text().splitlines()]
    assert len(held_out) == 96  # every training row is held out exactly once
    for k in range(3):
        labels = [json.loads(line)["label"] for line in (folder / "folds" / f"fold-{k}" / "validation.jsonl").read_text().splitlines()]
        assert labels.count("pos") == labels.count("neg") == 16  # stratified
    assert len(result.records) == 2
    for record in result.records:
        folds = [json.loads((folder / record.dir / f"fold-{k}" / "run" / "metrics.json").read_text())["loss"]
                 for k in range(3)]
        assert record.fold_scores == pytest.approx(folds)
        assert record.score == pytest.approx(statistics.fmean(folds))
        assert record.score_std == pytest.approx(statistics.pstdev(folds))
    assert "±" in (folder / "report.html").read_text()


def test_de_evaluates_each_population_in_parallel_and_resumes(tmp_path, tiny_models, toy_data):
    pytest.importorskip("nevergrad")
    raw = study_raw(tmp_path, tiny_models, toy_data, algorithm="de", workers=2, budget={"trials": 8},
                    de={"popsize": 4})
    result = run_study(validate_study(raw))
    records = result.records
    assert [r.number for r in records] == list(range(8)) and all(r.state == "complete" for r in records)
    assert [r.extra["generation"] for r in records] == [0] * 4 + [1] * 4
    assert all(r.params["method.rank"] in (2, 4, 8) for r in records)
    assert all(1e-4 <= r.params["train.learning_rate"] <= 1e-1 for r in records)
    pids = {r.worker.rpartition(":")[2] for r in records if "same_as" not in r.extra}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2  # a pool of two processes evaluated them
    stamps = metrics_stamps(result.folder)
    again = run_study(validate_study(raw))  # replayed: every candidate found finished, nothing trains
    assert [r.params for r in again.records] == [r.params for r in records]
    assert metrics_stamps(result.folder) == stamps


def _lmtune(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "lmtune", "tune", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_study_resumes_without_rerunning_finished_trials(tmp_path, tiny_models, toy_data):
    path = write_study(tmp_path, study_raw(tmp_path, tiny_models, toy_data, steps=40, budget={"trials": 3}))
    folder = tmp_path / "study"
    process = _lmtune(str(path))
    deadline = time.monotonic() + 120
    # Kill as soon as the third trial has started (its config is written before its model loads and trains).
    while not (folder / "trials" / "0002" / "config.yaml").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() else "timeout"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    stamps = metrics_stamps(folder)
    assert len(stamps) == 2
    result = run_study(load_study_config(path))
    assert {p: metrics_stamps(folder)[p] for p in stamps} == stamps  # finished trials untouched
    complete = [r for r in result.records if r.state == "complete"]
    killed = [r for r in result.records if r.state == "killed"]
    assert len(complete) == 3 and len(killed) == 1
    retry = next(r for r in complete if r.extra.get("retry_of") == killed[0].number)
    assert retry.dir == killed[0].dir and retry.params == killed[0].params  # same folder, same parameters


def test_two_workers_share_one_sqlite_study(tmp_path, tiny_models, toy_data):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    path = write_study(tmp_path, study_raw(tmp_path, tiny_models, toy_data, steps=40, budget={"trials": 4}))
    workers = [_lmtune(str(path), "--worker", "--storage", storage) for _ in range(2)]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output
    assert main(["tune", str(path), "--storage", storage, "--summary"]) == 0
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert summary["trials"]["complete"] == 4  # the budget is global, not per worker
    rows = (tmp_path / "study" / "trials.csv").read_text().strip().splitlines()[1:]
    assert len({row.split(",")[-2] for row in rows}) == 2  # both workers ran trials


def relative_paths(raw: dict, start: Path) -> dict:
    """The study with its model, data and output paths relative to `start`, as a user writes them."""
    rel = lambda value: os.path.relpath(value, start)
    base = raw["base"]
    base["model"]["name"] = rel(base["model"]["name"])
    base["data"] = {k: rel(v) for k, v in base["data"].items()}
    raw["output"]["dir"] = rel(raw["output"]["dir"])
    return raw


def test_pbt_exploit_copies_a_better_checkpoint_and_perturbs(tmp_path, tiny_models, toy_data, monkeypatch):
    pytest.importorskip("ray.tune")
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    raw = study_raw(tmp_path, tiny_models, toy_data, algorithm="pbt", workers=2, budget={"trials": 2},
                    space={"train.learning_rate": LR},
                    pbt={"interval_steps": 3, "intervals": 2, "quantile_fraction": 0.5, "synch": True,
                         "ray_temp_dir": ray_dir})
    # Relative paths, as a user writes them from the project root: Ray runs members in folders of its own.
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    raw = relative_paths(raw, tmp_path / "project")
    assert not Path(raw["base"]["data"]["train"]).is_absolute()
    try:
        result = run_study(validate_study(raw))
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    folder = result.folder
    exploits = [json.loads(line) for line in (folder / "pbt" / "exploits.jsonl").read_text().splitlines()]
    assert exploits, "PBT made no exploit"
    ex = exploits[0]
    copied = Path(ex["checkpoint_copy"]) / "run-0"
    weights = lambda run: load_file(str(Path(run) / "adapter_model.safetensors"))
    donor, own_before, start = weights(ex["donor_runs"][0]), weights(ex["previous_runs"][0]), weights(copied)
    assert all((donor[k] == start[k]).all() for k in donor)  # the better member's checkpoint, copied
    assert any((own_before[k] != start[k]).any() for k in donor)  # the member's own weights replaced
    assert ex["new_params"] != ex["previous_params"]  # hyper-parameters perturbed
    member = next(r for r in result.records if r.extra["trial_id"] == ex["trial_id"])
    after = member.extra["schedule"][-1]
    assert after["interval"] == ex["next_interval"] and after["exploited_from"] == ex["donor"]
    cfg = yaml.safe_load((folder / after["dir"] / "run" / "config.yaml").read_text())
    assert cfg["train"]["init_from"] == str(copied)  # the next interval trained on from the copy
    assert cfg["train"]["learning_rate"] == pytest.approx(ex["new_params"]["train.learning_rate"])
    assert len(result.records) == 2 and all(r.state == "complete" for r in result.records)
    assert all(r.seconds and r.seconds > 0 for r in result.records)  # a member's time is its intervals' time
    assert "chart-schedule-train-learning-rate" in (folder / "report.html").read_text()
    assert folder == tmp_path / "study"


def test_a_study_in_which_no_trial_completed_exits_nonzero(tmp_path, tiny_models, toy_data, capsys):
    raw = study_raw(tmp_path, tiny_models, toy_data, budget={"trials": 2})
    raw["base"]["data"]["train"] = str(tmp_path / "missing.jsonl")
    assert main(["tune", str(write_study(tmp_path, raw))]) == 2
    captured = capsys.readouterr()
    assert "no trial of the study completed (2 trial(s) ran)" in captured.err
    assert "missing.jsonl does not exist" in captured.err  # the first trial's own error
    assert "2 of 2 trials failed:" in captured.out
    assert (tmp_path / "study" / "trials.csv").is_file()  # the summary is still written


def test_failed_trials_are_counted_by_error_and_space_paths_are_relative_to_the_start(
        tmp_path, tiny_models, toy_data, capsys, monkeypatch):
    # A grid over two training files, one of them missing: one trial fails, the study succeeds and says why.
    monkeypatch.chdir(tmp_path)
    shutil.copy(toy_data["train"], tmp_path / "here.jsonl")
    raw = study_raw(tmp_path, tiny_models, toy_data, algorithm="grid", budget={"trials": 2},
                    space={"data.train": ["here.jsonl", "gone.jsonl"]})
    assert main(["tune", str(write_study(tmp_path, raw))]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 trials failed:" in out and f"1 x data file {tmp_path / 'gone.jsonl'} does not exist" in out
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert summary["trials"]["complete"] == 1 and list(summary["failures"].values()) == [1]
    best = yaml.safe_load((tmp_path / "study" / "best_config.yaml").read_text())
    assert best["data"]["train"] == str(tmp_path / "here.jsonl")  # absolute: re-runs from any folder
