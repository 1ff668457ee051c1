"""The compare leaderboard and HTML report, from hand-made entry results: ranking, files, a self-contained
page, and the page as a real headless Chromium renders it (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import csv
import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import open_page
from lmtune.compare.leaderboard import leaderboard_rows, terminal_table, write_leaderboard
from lmtune.compare.report import write_report
from lmtune.html_report import slug


def _log(steps: int, start: float, evals: list[float]) -> list[dict]:
    """Trainer log lines: a train loss every 10 steps, an eval loss at the end of each epoch."""
    lines = [{"step": s, "epoch": s / steps * len(evals), "loss": round(start * 0.96 ** (s / 10) + 0.05, 4)}
             for s in range(10, steps + 1, 10)]
    per_epoch = steps // len(evals)
    lines += [{"step": per_epoch * (i + 1), "epoch": float(i + 1), "eval_loss": v} for i, v in enumerate(evals)]
    return sorted(lines, key=lambda line: line["step"])


def _entry(name: str, kind: str, accuracy: float | None, **extra) -> dict:
    entry = {"name": name, "kind": kind, "method": name, "status": "done", "error": None,
             "metrics": {"accuracy": accuracy, "macro_f1": None if accuracy is None else accuracy - 0.004,
                         "roc_auc": None if accuracy is None else min(accuracy + 0.06, 1.0)},
             "trainable_params": None, "total_params": None, "trainable_percent": None, "artifact_bytes": None,
             "train_seconds": None, "peak_rss_mb": None, "run_dir": f"runs/compare/{name}", "log": [],
             "confusion_matrix": None, "labels": None}
    entry.update(extra)
    return entry


def sample_entries() -> list[dict]:
    """Two fine-tuning strategies, two baselines and a failure, in no particular order."""
    labels = ["neg", "pos"]
    return [
        _entry("lora", "strategy", 0.871, trainable_params=147_456, total_params=22_860_000,
               trainable_percent=0.645, artifact_bytes=598_112, train_seconds=412.3, peak_rss_mb=1850.4,
               log=_log(200, 0.7, [0.52, 0.41]), confusion_matrix=[[88, 12], [14, 86]], labels=labels),
        _entry("tfidf-logreg", "baseline", 0.802, train_seconds=2.1, peak_rss_mb=410.0, artifact_bytes=1_204_000,
               confusion_matrix=[[81, 19], [21, 79]], labels=labels),
        _entry("prompt-tuning", "strategy", None, status="failed", metrics={},
               error="RuntimeError: CUDA out of memory <tried to allocate 2.00 GiB> & more"),
        _entry("full", "strategy", 0.884, trainable_params=22_713_216, total_params=22_713_216,
               trainable_percent=100.0, artifact_bytes=90_912_000, train_seconds=980.0, peak_rss_mb=3120.9,
               log=_log(200, 0.7, [0.47, 0.37]), confusion_matrix=[[90, 10], [13, 87]], labels=labels),
        _entry("majority", "baseline", 0.5, train_seconds=0.01, trainable_params=0,
               metrics={"accuracy": 0.5, "macro_f1": 0.333, "roc_auc": None, "per_class": {"pos": 1.0}}),
    ]


# --- leaderboard -----------------------------------------------------------------------------------------

def test_rows_best_first_failed_last():
    rows = leaderboard_rows(sample_entries(), "accuracy", True)
    assert [r["name"] for r in rows] == ["full", "lora", "tfidf-logreg", "majority", "prompt-tuning"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, None]
    assert rows[0]["gap_to_best"] == 0.0
    assert rows[1]["gap_to_best"] == pytest.approx(0.871 - 0.884)
    assert all(r["gap_to_best"] < 0 for r in rows[1:4])
    assert rows[-1]["status"] == "failed" and rows[-1]["gap_to_best"] is None and "out of memory" in rows[-1]["error"]


def test_metric_columns_union_main_first_scalars_only():
    rows = leaderboard_rows(sample_entries(), "macro_f1", True)
    keys = list(rows[0])
    assert keys[:4] == ["rank", "name", "kind", "method"]
    assert keys[4:7] == ["macro_f1", "accuracy", "roc_auc"]
    assert "per_class" not in keys and all(list(r) == keys for r in rows)
    assert rows[0]["name"] == "full" and next(r for r in rows if r["name"] == "majority")["roc_auc"] is None


def test_lower_is_better_and_ties():
    entries = [_entry(n, "strategy", None, metrics={"perplexity": p}) for n, p in
               [("a", 9.0), ("b", 7.5), ("c", 7.5), ("d", None)]]
    rows = leaderboard_rows(entries, "perplexity", greater_is_better=False)
    assert [(r["name"], r["rank"]) for r in rows] == [("b", 1), ("c", 1), ("a", 3), ("d", None)]
    assert rows[2]["gap_to_best"] == pytest.approx(-1.5) and rows[1]["gap_to_best"] == 0.0
    assert rows[3]["gap_to_best"] is None


def test_write_leaderboard_csv_and_json(tmp_path):
    rows = leaderboard_rows(sample_entries(), "accuracy", True)
    paths = write_leaderboard(rows, tmp_path)
    assert sorted(p.name for p in paths) == ["leaderboard.csv", "leaderboard.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
    table = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    assert table[0]["accuracy"] == "0.884" and table[0]["trainable_params"] == "22713216"
    assert table[-1]["status"] == "failed" and table[-1]["rank"] == "" and "out of memory" in table[-1]["error"]
    assert json.loads((tmp_path / "leaderboard.json").read_text()) == rows


def test_terminal_table_is_aligned_and_readable():
    rows = leaderboard_rows(sample_entries(), "accuracy", True)
    text = terminal_table(rows, "accuracy")
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["#", "name", "kind", "method", "accuracy"]
    assert set(lines[1].replace(" ", "")) == {"-"} and len(lines[1]) >= max(len(line) for line in lines[2:7])
    for piece in ("0.884", "22,713,216", "147,456", "90.9 MB", "598.1 KB", "412", "-0.013", "100.00%"):
        assert piece in text, piece
    assert "prompt-tuning failed: RuntimeError: CUDA out of memory" in text
    assert "gap to best" in lines[-1]


# --- the HTML report -------------------------------------------------------------------------------------

def expected_chart_ids() -> list[str]:
    return ["chart-main-metric", "chart-params", "chart-time", "chart-loss-lora", "chart-loss-full",
            "chart-confusion-lora", "chart-confusion-full", "chart-confusion-tfidf-logreg"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    entries = sample_entries()
    rows = leaderboard_rows(entries, "accuracy", True)
    folder = tmp_path_factory.mktemp("compare")
    write_leaderboard(rows, folder)
    return write_report(folder / "report.html", "classification: all-MiniLM-L6-v2 on reviews.jsonl", entries,
                        rows, "accuracy", True, subtitle="2025-01-01 12:00 · x86_64, 2 cores")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.links += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href")]


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    parser.close()
    assert not [link for link in parser.links if link.lower().startswith(("http://", "https://", "//"))]
    assert not parser.tags & {"script", "link", "img", "iframe"} and {"table", "figure", "svg"} <= parser.tags
    for chart_id in expected_chart_ids():
        assert f'id="{chart_id}"' in text, chart_id
    assert 'id="chart-loss-prompt-tuning"' not in text and 'id="chart-loss-majority"' not in text
    assert "&lt;tried to allocate 2.00 GiB&gt; &amp; more" in text  # the error is in the table, escaped
    assert "No training log (not plotted): tfidf-logreg, majority." in text
    assert "Not plotted (no trainable parameters): tfidf-logreg, majority." in text
    assert slug("LoRA r=8 / q,v") == "lora-r-8-q-v"


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk of a PNG


def test_report_renders_in_chromium(report, tmp_path):
    with open_page(report) as (page, problems, requests):
        for chart_id in expected_chart_ids():
            box = page.locator(f"figure#{chart_id} svg").bounding_box()
            assert box and box["width"] > 100 and box["height"] > 50, (chart_id, box)
            assert page.locator(f"figure#{chart_id} figcaption").inner_text().strip()
        assert page.locator("#leaderboard-table tbody tr").count() == len(sample_entries())
        assert page.locator("#leaderboard-table tbody tr.failed").count() == 1
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
    assert not problems, problems
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    width, height = _png_size(shot)
    assert width >= 1000 and height > 1500 and shot.stat().st_size > 50_000


def test_report_survives_sparse_results(tmp_path):
    """Nothing to chart (a failure, an entry with no main metric) and a 12-class matrix: still a valid page."""
    labels = [f"class-{i}" for i in range(12)]
    matrix = [[30 if i == j else (i + j) % 3 for j in range(12)] for i in range(12)]
    entries = [_entry("bleu-less", "strategy", None, metrics={"chrf": 41.2}, confusion_matrix=matrix, labels=labels),
               _entry("broken", "strategy", None, status="failed", metrics={}, error="ValueError: bad")]
    rows = leaderboard_rows(entries, "bleu", True)
    assert [r["rank"] for r in rows] == [None, None] and list(rows[0])[4:6] == ["bleu", "chrf"]
    text = write_report(tmp_path / "r.html", "t", entries, rows, "bleu", True).read_text()
    HTMLParser().feed(text)
    assert "No finished entry has a bleu." in text and 'id="chart-confusion-bleu-less"' in text
    assert 'id="chart-loss-' not in text and "ValueError: bad" in text
    assert "bleu" in terminal_table(rows, "bleu") and terminal_table([], "bleu")
