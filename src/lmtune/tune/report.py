"""report.html of a study: one self-contained file (inline CSS, matplotlib SVG charts, no script), in the style
of the compare report: the objective over trials with the best so far, the score against each searched
hyper-parameter, PBT's hyper-parameter schedules, and the trial table."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from lmtune.html_report import CSS, PAGE, STYLE, figure_html
from lmtune.io import write_text
from lmtune.tune.space import show
from lmtune.tune.trial import TrialRecord

if TYPE_CHECKING:
    from lmtune.tune.study import Study

BLUE, ORANGE, GREY = "#4c72b0", "#dd8452", "#8c8c8c"


def write_report(study: Study, records: list[TrialRecord], best: TrialRecord | None,
                 reference: TrialRecord | None, path: Path) -> Path:
    import matplotlib

    used: set[str] = set()
    metric = study.cfg.objective.metric
    done = [r for r in records if r.state == "complete" and r.score is not None]
    with matplotlib.rc_context(STYLE):
        charts = [_objective_figure(study, done, reference, used)] if done else []
        charts += [_param_figure(study, done, key, used) for key in study.keys] if done else []
        schedules = _schedule_figures(study, records, used)
    cv = f", mean over {study.cfg.cv.folds} stratified folds" if study.cfg.cv else ""
    best_text = (f"best {metric} <b>{best.score:.4f}</b> (trial {best.number}: "
                 f"{html.escape(_params(best))})" if best else "no complete trial")
    ref_text = f"; base config {reference.score:.4f}" if reference and reference.score is not None else ""
    body = [
        (f"<header><h1>{html.escape(study.cfg.algorithm)} search: {html.escape(study.folder.name)}</h1>"
         f"<p>{study.cfg.objective.direction} {html.escape(metric)} on {study.cfg.objective.split}{cv}; "
         f"{len(done)} complete of {len(records)} trials; {best_text}{ref_text}</p></header>"),
        _section("charts", "Objective", charts),
        _section("schedules", "PBT hyper-parameter schedules", schedules) if schedules else "",
        _table(study, records, best),
    ]
    return write_text(path, PAGE.format(title=html.escape(f"lmtune tune: {study.folder.name}"), css=CSS,
                                        body="\n".join(b for b in body if b)))


def _params(record: TrialRecord) -> str:
    return " ".join(f"{k}={show(v)}" for k, v in record.params.items())


def _objective_figure(study: Study, done: list[TrialRecord], reference: TrialRecord | None, used: set[str]) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    numbers = [r.number for r in done]
    scores = [r.score for r in done]
    ax.scatter(numbers, scores, color=BLUE, s=22, label="trial", zorder=3)
    if any(r.score_std is not None for r in done):
        ax.errorbar(numbers, scores, yerr=[r.score_std or 0 for r in done], fmt="none", ecolor=BLUE, alpha=0.4)
    best, running = [], None
    for score in scores:
        running = score if running is None or study.better(score, running) else running
        best.append(running)
    ax.step(numbers, best, where="post", color=ORANGE, label="best so far")
    if reference is not None and reference.score is not None:
        ax.axhline(reference.score, color=GREY, linestyle="--", label="base config")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(study.cfg.objective.metric)
    ax.legend(frameon=False, fontsize=8)
    return figure_html(used, "objective", fig, f"{study.cfg.objective.metric} of every trial, in order", wide=True)


def _param_figure(study: Study, done: list[TrialRecord], key: str, used: set[str]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6, 2.8))
    ax = fig.subplots()
    values = [r.params.get(key) for r in done]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else [str(v) for v in values]
    ax.scatter(xs, [r.score for r in done], color=BLUE, s=18)
    param = next(p for p in study.params if p.key == key)
    if numeric and param.log:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(study.cfg.objective.metric)
    return figure_html(used, "param", fig, f"{study.cfg.objective.metric} against {key}", name=key)


def _schedule_figures(study: Study, records: list[TrialRecord], used: set[str]) -> list[str]:
    """PBT: each member's hyper-parameters and score per interval; exploits marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scheduled = [r for r in records if r.extra.get("schedule")]
    if not scheduled:
        return []
    figures = []
    for key in [*study.keys, "score"]:
        fig = Figure(figsize=(4.2, 3.0))
        ax = fig.subplots()
        for record in scheduled:
            steps = record.extra["schedule"]
            xs = [s["interval"] for s in steps]
            ys = [s["score"] if key == "score" else s["params"].get(key) for s in steps]
            line, = ax.plot(xs, ys, marker="o", markersize=3, label=str(record.extra.get("trial_id", record.number)))
            for s in steps:
                if s.get("exploited_from"):
                    y = s["score"] if key == "score" else s["params"].get(key)
                    ax.scatter([s["interval"]], [y], marker="*", s=80, color=line.get_color(), zorder=4)
        param = next((p for p in study.params if p.key == key), None)
        if param is not None and param.log:
            ax.set_yscale("log")
        ax.set_xlabel("interval")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key if key != "score" else study.cfg.objective.metric)
        ax.legend(frameon=False, fontsize=7)
        figures.append(figure_html(used, "schedule", fig, f"{key} per interval (★: exploit, copied a better member)", name=key))
    return figures


def _section(section_id: str, heading: str, figures: list[str]) -> str:
    if not figures:
        return ""
    return f'<section id="{section_id}"><h2>{heading}</h2><div class="charts">{"".join(figures)}</div></section>'


def _table(study: Study, records: list[TrialRecord], best: TrialRecord | None) -> str:
    head = ["trial", "state", study.cfg.objective.metric, "± std", *study.keys, "seconds", "folder"]
    rows = []
    for r in records:
        mark = ' class="best"' if best is not None and r.number == best.number else ""
        cells = [r.number, r.state, f"{r.score:.4f}" if r.score is not None else "—",
                 f"{r.score_std:.4f}" if r.score_std is not None else "—",
                 *[show(r.params.get(k)) for k in study.keys], f"{r.seconds or 0:.0f}", r.dir or ""]
        title = f' title="{html.escape(r.error)}"' if r.error else ""
        rows.append(f"<tr{mark}{title}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return ('<section id="trials"><h2>Trials</h2><table id="trials-table"><thead><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></section>")
