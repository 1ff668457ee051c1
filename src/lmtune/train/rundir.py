"""Run directories: what a finished or killed run looks like, provenance, and the checks before reuse."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import yaml

import lmtune
from lmtune.errors import LmtuneError
from lmtune.io import check_made_folder, check_writable_location, make_writable_dir, remove_made_folder, sha256_files
from lmtune.methods import STRATEGIES
from lmtune.runconfig import RunConfig, resolve_config
from lmtune.train import ranks

CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINTS = "checkpoints"
MADE_BY_LMTUNE = (PROVENANCE_FILE,)  # a folder holding it is a run lmtune made, which output.overwrite may replace
# Settings that may differ when a killed run is resumed: they say how to run, not what is trained.
RESUME_FREE_KEYS = {("train", "resume"), ("train", "progress"), ("train", "num_threads"), ("output", "overwrite")}
# How the same computation runs (lmtune.train.speed): a run killed for memory may resume with checkpointing on.
# fast_dropout draws other masks from the same distribution (its `auto` differs between a CPU and a GPU machine).
RESUME_FREE_KEYS |= {("train", key) for key in ("packing", "lm_logits", "torch_compile", "liger_kernel",
                                                "gradient_checkpointing", "fast_dropout")}


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.output.dir) / cfg.run_dir_name()


def is_finished(run_dir: Path) -> bool:
    return (run_dir / METRICS_FILE).is_file()


def check_run_dir(cfg: RunConfig) -> Path:
    """Where the run goes and whether that is allowed, changing nothing: a run to be replaced is removed only by
    `claim_run_dir`, after the data and the model have loaded (a typo in data.train never costs a finished run)."""
    root, run_dir = Path(cfg.output.dir), run_dir_of(cfg)
    for path, setting in ((root, "output.dir"), (run_dir, "output.name")):
        if path.exists() and not path.is_dir():
            raise LmtuneError(f"{path} is a file, not a folder; set {setting} to a folder (it is created if missing)")
    if root.resolve() not in run_dir.resolve().parents:  # a link inside output.dir that points out of it
        raise LmtuneError(f"{run_dir} leads outside output.dir {root}; choose another output.name")
    if check_reuse(run_dir, cfg.output.overwrite, cfg.train.resume, "output.name=<new name>"):
        check_same_run(cfg, load_run_config(run_dir))
    return run_dir


def check_reuse(run_dir: Path, overwrite: bool, resume: bool, elsewhere: str, setting: str = "output.dir") -> bool:
    """The rules for a folder a run is about to use, changing nothing (`lmtune train` and `lmtune pretrain`): a
    finished run needs `overwrite`, an unfinished one `resume`, and only a folder lmtune made may be replaced.
    True when an unfinished run is there to be resumed. `elsewhere`: the setting that picks another folder."""
    check_writable_location(run_dir, setting)  # a read-only output fails before the model loads, not after
    if not (run_dir.exists() and any(run_dir.iterdir())):
        return False
    if overwrite and not resume:
        check_made_folder(run_dir, MADE_BY_LMTUNE, "an lmtune run")  # fail now, remove later
        return False
    if is_finished(run_dir):
        raise LmtuneError(f"{run_dir} holds a finished run; set output.overwrite=true to replace it or {elsewhere}")
    if not resume:
        raise LmtuneError(
            f"{run_dir} holds an unfinished run; set train.resume=true to continue it, output.overwrite=true to "
            f"start over, or {elsewhere}"
        )
    return True


def claim_run_dir(cfg: RunConfig, run_dir: Path) -> Path:
    """After every check passed: replace the old run when output.overwrite says so, then make the folder."""
    return claim(run_dir, cfg.output.overwrite, cfg.train.resume)


def claim(run_dir: Path, overwrite: bool, resume: bool, setting: str = "output.dir") -> Path:
    """`claim_run_dir` for any folder `check_reuse` passed: only after data and model have loaded."""
    if overwrite and not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        remove_made_folder(run_dir, MADE_BY_LMTUNE, "an lmtune run")
    return make_writable_dir(run_dir, setting)


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise LmtuneError(f"{run_dir} is not an lmtune run directory (no {CONFIG_FILE}); give a folder `lmtune train` wrote")
    return resolve_config(_migrated(yaml.safe_load(path.read_text(encoding="utf-8"))))


def _migrated(raw: dict) -> dict:
    """A config.yaml written before model.dtype and train.precision existed: such a run loaded its base in
    float32 and trained with `train.bf16` (a user's config saying bf16 is refused with the fix instead). One
    written before model.pooling_layers existed has a head on the last layer alone (every saved config has the
    key resolved since). A method section gets the values its strategy's options had before they existed
    (`Strategy.saved_before`)."""
    model, train = raw.get("model") or {}, raw.get("train") or {}
    if "bf16" in train:
        train = {k: v for k, v in train.items() if k != "bf16"} | {"precision": "bf16" if train["bf16"] else "fp32"}
        model = {"dtype": "float32", **model}
    model = {"pooling_layers": 1, **model}
    migrated = {**raw, "model": model, "train": train}
    method = raw.get("method") or {}
    if method.get("name") in STRATEGIES.names():
        migrated["method"] = {**STRATEGIES.get(method["name"]).saved_before, **method}
    return migrated


def _flat(data: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flat(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def config_differences(new: RunConfig, old: RunConfig, free: set[tuple] = frozenset()) -> list[str]:
    a, b = _flat(new.model_dump()), _flat(old.model_dump())
    keys = sorted(set(a) | set(b))
    return [f"{'.'.join(k)}: {b.get(k)!r} → {a.get(k)!r}" for k in keys if k not in free and a.get(k) != b.get(k)]


def check_same_run(cfg: RunConfig, saved: RunConfig) -> None:
    """`cfg` and the saved config are both resolved (lmtune.runconfig.resolve), so every default compares as the
    value it resolved to; only the settings that say how to run may differ."""
    differences = config_differences(cfg, saved, RESUME_FREE_KEYS)
    if differences:
        raise LmtuneError(
            "train.resume=true continues the same run, but the config differs from the saved one:\n  "
            + "\n  ".join(differences)
            + "\nUse the saved config (config.yaml in the run directory) or start a new run (output.name=...)."
        )


def data_hash(cfg: RunConfig) -> str | None:
    files = [Path(p) for p in (cfg.data.train, cfg.data.validation, cfg.data.test) if p and not cfg.data.hub]
    return sha256_files([p for p in files if p.is_file()]) if files else None


def provenance(cfg: RunConfig, backbone) -> dict[str, Any]:
    record = provenance_record(base_model_record(backbone), data_hash(cfg), cfg.train.seed, cfg.method.name)
    return {**record, "processes": ranks.world_size()}  # torchrun/accelerate launch: the data-parallel ranks


def base_model_record(backbone) -> dict[str, Any]:
    """What identifies the base model in provenance.json (`check_same_base` compares the weights hash)."""
    return {
        "id": backbone.model_id,
        "path": str(backbone.path),
        "weights_sha256": backbone.weights_hash,
        "model_type": backbone.model_type,
        "kind": backbone.kind,
        "pooling": backbone.pooling,
    }


def provenance_record(base_model: dict[str, Any] | None, data_sha256: str | None, seed: int, method: str) -> dict[str, Any]:
    """provenance.json: the first file a run writes, and the mark that output.overwrite may replace its folder."""
    import peft
    import torch
    import transformers

    return {
        "lmtune_version": lmtune.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": base_model,
        "data_sha256": data_sha256,
        "seed": seed,
        "method": method,
        "versions": {"python": platform.python_version(),
                     **{library.__name__: library.__version__ for library in (torch, transformers, peft)}},
    }


def check_same_base(run_dir: Path, saved_provenance: dict, backbone) -> None:
    expected = saved_provenance["base_model"]
    if expected["weights_sha256"] != backbone.weights_hash:
        raise LmtuneError(
            f"{run_dir} was trained on base model {expected['id']!r} (weights sha256 {expected['weights_sha256'][:12]}…), "
            f"but the model loaded now, {backbone.model_id!r}, has different weights ({backbone.weights_hash[:12]}…). "
            f"Load it with model.name={expected['id']} (or that model's folder)."
        )
