"""`lmtune quickstart`: the seed example of transfer learning — sort product reviews into positive / neutral /
negative with the bundled MiniLM: three strategies against the three baselines, as one `lmtune compare` run that
ends with a leaderboard and report.html."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from lmtune.compare.runner import CompareResult, load_compare_config, run_compare
from lmtune.io import write_text

DATA = Path(str(resources.files("lmtune.quickstart") / "data"))

STRATEGIES = [
    {"name": "freeze (head only)", "overrides": ["method.name=freeze"]},
    {"name": "lora", "overrides": ["method.name=lora"]},
    {"name": "p_tuning", "overrides": ["method.name=p_tuning",
                                       "method.init_text=Is this product review positive, neutral or negative?"]},
]
BASELINES = [{"name": "tfidf"}, {"name": "prompting"}, {"name": "scratch"}]


def quickstart_compare(output: Path) -> dict:
    return {
        "base": {
            "model": {"name": "minilm"},
            "data": {"train": str(DATA / "reviews_train.jsonl"), "test": str(DATA / "reviews_test.jsonl"),
                     "labels": ["negative", "neutral", "positive"]},
            # 540 training reviews: a few more passes than the default 3 let every strategy settle.
            "train": {"epochs": 6},
        },
        "strategies": STRATEGIES,
        "baselines": BASELINES,
        "output": {"dir": str(output), "title": "Product reviews: positive / neutral / negative (120 held-out reviews)"},
    }


def run_quickstart(output: Path, overrides: list[str] | None = None) -> CompareResult:
    """The comparison; `overrides` apply to the base run config (e.g. model.name=smollm2 train.epochs=3) unless
    they name a compare key (`base.`, `strategies=`, `baselines=`, `output.`)."""
    compare_keys = ("base.", "strategies", "baselines", "output.")
    scoped = [o if o.startswith(compare_keys) else f"base.{o}" for o in overrides or []]
    config_file = write_text(output / "quickstart.yaml", yaml.safe_dump(quickstart_compare(output), sort_keys=False))
    result = run_compare(load_compare_config(config_file, scoped))
    lora = next((e["run_dir"] for e in result.entries if e["name"] == "lora" and e["status"] == "done"), None)
    if lora:
        print(f"try: lmtune predict {lora} --text \"The battery died after two days\"")
    return result
