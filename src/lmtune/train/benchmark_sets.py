"""`lmtune eval RUN --task llm_adapters --datasets gsm8k,SVAMP,boolq`: one model, several of the LLM-Adapters
evaluation sets, one table. Also evaluates an untuned model (`--base smollm2`): the zero-shot score a tuned run
should beat."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from lmtune.data.sources import read_file
from lmtune.errors import LmtuneError
from lmtune.evaluate.predictions import PREDICTIONS_DIR, take_predictions
from lmtune.io import write_json
from lmtune.runconfig import resolve, resolve_config

SUITES = {"llm_adapters": "LMTUNE_LLM_ADAPTERS_DATA"}
"""Suite name → the environment variable that may point at its `dataset/` folder."""


def suite_root(suite: str, given: str | None) -> Path:
    """The folder holding `<name>/test.json` for each set: given, from the environment, or the project's
    `../shared/data/llm_adapters/dataset` found from the working directory upwards."""
    if suite not in SUITES:
        raise LmtuneError(f"unknown evaluation suite {suite!r}; known: {', '.join(SUITES)}")
    candidates = [given, os.environ.get(SUITES[suite])]
    here, source = Path.cwd().resolve(), Path(__file__).resolve()  # the source tree too: a checkout beside shared/
    candidates += [str(p / "shared" / "data" / "llm_adapters" / "dataset") for p in (here, *here.parents, *source.parents)]
    for candidate in filter(None, candidates):
        if Path(candidate).is_dir():
            return Path(candidate)
    raise LmtuneError(
        f"cannot find the {suite} datasets; pass --data-root DIR (the folder with gsm8k/, SVAMP/, ...) or set {SUITES[suite]}"
    )


def suite_sets(root: Path, names: list[str]) -> dict[str, Path]:
    available = sorted(p.name for p in root.iterdir() if (p / "test.json").is_file())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise LmtuneError(f"no test set {', '.join(unknown)} in {root}; available: {', '.join(available)}")
    return {name: root / name / "test.json" for name in names}


Scoring = Literal["auto", "choices", "generate"]


def evaluate_suite(loaded, suite: str, sets: dict[str, Path], max_samples: int | None, out_dir: Path,
                   scoring: Scoring = "auto") -> dict[str, dict[str, Any]]:
    """Score each set with the loaded model; predictions go to `out_dir/predictions/<suite>/<set>.jsonl`.

    `auto`: the commonsense sets (answers are option keywords: boolq, ARC-Easy, ...) by the log-likelihood of each
    choice, as lm-evaluation-harness scores them; the math sets by generating and extracting the answer, as the
    LLM-Adapters paper does. `generate` scores every set the paper's way (its own numbers), `choices` insists on
    log-likelihood."""
    results = {}
    for name, path in sets.items():
        table = read_file(str(path))
        if max_samples:
            table = table.select(range(min(max_samples, len(table))))
        task, how = _scorer(loaded, table, scoring, name)
        print(f"{suite}/{name}: {len(table)} rows, scored by {how}")
        metrics = task.evaluate(loaded.model, table, loaded.config.eval.batch_size)
        take_predictions(metrics, out_dir, f"{suite}/{name}")
        results[name] = {"source": str(path), "scoring": how, **metrics}
    return results


def _scorer(loaded, table, scoring: Scoring, name: str):
    """The task that scores `table`: the run's own for generation; a multiple-choice task on the same model (the
    run's own if it is one) for log-likelihood."""
    from lmtune.evaluate.extraction import infer_answer_type
    from lmtune.tasks import TASKS

    answers = table["answer"] if "answer" in table.column_names else []
    choices = scoring == "choices" or (scoring == "auto" and infer_answer_type(answers) == "keyword")
    if not choices:
        if loaded.task.name == "multiple_choice":
            raise LmtuneError(f"{name} is scored by generating an answer, which a multiple_choice run does not learn; "
                              "evaluate it with an instruction run (or --scoring choices for option sets)")
        return loaded.task, "generation"
    section = loaded.config.task.model_dump() if loaded.task.name == "multiple_choice" else {"name": "multiple_choice"}
    cfg = loaded.config.updated({"task": {**section, "layout": "llm_adapters"}})
    return TASKS.build("multiple_choice", cfg), "log-likelihood"


def untuned(model_name: str, overrides: list[str] | None, task_name: str = "instruction"):
    """The base model with nothing trained, for a generative task (instruction unless overridden): the zero-shot
    reference a tuned run should beat."""
    from lmtune.device import place
    from lmtune.methods import STRATEGIES
    from lmtune.models.loading import load_backbone
    from lmtune.tasks import TASKS
    from lmtune.train.artifacts import LoadedRun

    cfg = resolve(resolve_config({"model": {"name": model_name}, "task": {"name": task_name}}, overrides))
    task = TASKS.build(cfg.task.name, cfg)
    model = place(task.build_model(load_backbone(cfg.model, task.backbone_class, cfg.train.seed)).eval())
    return LoadedRun(Path("."), cfg, task, STRATEGIES.build(cfg.method.name, cfg.method), model)


def suite_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'dataset':<14} {'rows':>6} {'accuracy':>9} {'acc_norm':>9} {'no answer':>10}  scoring"]
    for name, m in results.items():
        norm = f"{m['accuracy_norm']:>9.3f}" if "accuracy_norm" in m else f"{'-':>9}"
        lines.append(f"{name:<14} {m['rows']:>6} {m['accuracy']:>9.3f} {norm} {m.get('no_answer', '-'):>10}  {m['scoring']}")
    if len(results) > 1:
        mean = sum(m["accuracy"] for m in results.values()) / len(results)
        lines.append(f"{'mean':<14} {'':>6} {mean:>9.3f}")
    return "\n".join(lines)


def record_suite(out_dir: Path, suite: str, results: dict[str, dict[str, Any]], model_id: str) -> Path:
    """`<suite>.json` beside the predictions: per-set metrics, the model, when."""
    summary = {"suite": suite, "model": model_id, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sets": results}
    return write_json(out_dir / PREDICTIONS_DIR / f"{suite}.json", summary)
