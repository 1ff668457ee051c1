"""k-fold cross-validation: the training split (after `data.max_train_samples`) cut into k stratified folds
(scikit-learn StratifiedKFold; KFold when the task has no label column), each written as train/validation jsonl
files in the study folder, so a fold run is an ordinary run with `data.train`/`data.validation` overridden."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmtune.errors import LmtuneError
from lmtune.io import atomic_write, write_json
from lmtune.runconfig import resolve_config
from lmtune.tune.space import format_value

if TYPE_CHECKING:
    from lmtune.tune.study import Study


def prepare_folds(study: Study) -> list[list[str]]:
    """Write the folds once (a resumed study reuses them) and return each fold's data overrides."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from lmtune.runconfig import build_task

    cv = study.cfg.cv
    cfg = resolve_config(copy.deepcopy(study.base), base_dir=study.base_dir)
    seed = cfg.train.seed if cv.seed is None else cv.seed
    folder = study.folder / "folds"
    manifest_path = folder / "manifest.json"
    task = build_task(cfg)
    table = task.load_data().train  # read and sampled exactly as a run reads it
    labels = task.cfg.data.labels
    manifest = {"folds": cv.folds, "seed": seed, "rows": len(table), "labels": labels}
    if manifest_path.is_file():
        saved = json.loads(manifest_path.read_text())
        if {k: saved.get(k) for k in manifest} != manifest:
            raise LmtuneError(f"{folder} holds other folds ({saved}); use a new output.dir for a new study")
        return _overrides(folder, cv.folds, labels)
    try:
        from lmtune.data.labels import label_values

        y = label_values(table, cfg.data.label_column, "train")
        splitter, kind = StratifiedKFold(cv.folds, shuffle=True, random_state=seed), "stratified"
        if min(np.unique(y, return_counts=True)[1]) < cv.folds:
            raise LmtuneError(f"cv.folds={cv.folds} needs at least {cv.folds} training rows of every class")
    except LmtuneError as err:
        if "cv.folds" in str(err):
            raise
        y, splitter, kind = np.zeros(len(table)), KFold(cv.folds, shuffle=True, random_state=seed), "plain"
    sizes = []
    for k, (train_idx, val_idx) in enumerate(splitter.split(np.zeros(len(table)), y)):
        for name, idx in (("train", train_idx), ("validation", val_idx)):
            part = table.select(sorted(int(i) for i in idx))
            atomic_write(folder / f"fold-{k}" / f"{name}.jsonl", lambda tmp, part=part: part.to_json(str(tmp), lines=True))
        sizes.append({"train": len(train_idx), "validation": len(val_idx)})
    write_json(manifest_path, {**manifest, "kind": kind, "sizes": sizes})
    return _overrides(folder, cv.folds, labels)


def _overrides(folder: Path, folds: int, labels: list[str] | None) -> list[list[str]]:
    out = []
    for k in range(folds):
        fold = folder / f"fold-{k}"
        out.append([
            f"data.train={format_value(str(fold / 'train.jsonl'))}",
            f"data.validation={format_value(str(fold / 'validation.jsonl'))}",
            "data.format=jsonl", "data.hub=null", "data.test=null", "data.max_train_samples=null",
            *([f"data.labels={format_value(labels)}"] if labels else []),
        ])
    return out
