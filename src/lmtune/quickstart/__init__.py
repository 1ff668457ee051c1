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


def quickstart_compare(output: Path) -> dict:
    """The compare config of `data/quickstart.yaml`, its data files and output folder made absolute."""
    config = yaml.safe_load((DATA / "quickstart.yaml").read_text(encoding="utf-8"))
    data = config["base"]["data"]
    data["train"], data["test"] = str(DATA / data["train"]), str(DATA / data["test"])
    config["output"]["dir"] = str(output)
    return config


def run_quickstart(output: Path, overrides: list[str] | None = None) -> CompareResult:
    """The comparison; `overrides` apply to the base run config (e.g. model.name=smollm2 train.epochs=3) unless
    they name a compare key (`base.`, `strategies=`, `baselines=`, `output.`)."""
    compare_keys = ("base.", "strategies", "baselines", "output.")
    scoped = [o if o.startswith(compare_keys) else f"base.{o}" for o in overrides or []]
    config_file = write_text(output / "quickstart.yaml", yaml.safe_dump(quickstart_compare(output), sort_keys=False))
    result = run_compare(load_compare_config(config_file, scoped))
    run_dirs = {e["name"]: e["run_dir"] for e in result.entries if e["status"] == "done"}
    best = next((r["name"] for r in result.rows if r.get("kind") == "strategy" and r["name"] in run_dirs), None)
    if best:  # the leaderboard's best fine-tuned entry
        print(f"try: lmtune predict {run_dirs[best]} --text \"The battery died after two days\"")
    return result
