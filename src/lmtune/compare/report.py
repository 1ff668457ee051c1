"""The HTML report of `lmtune compare`: one self-contained file (inline CSS, charts as inline SVG drawn
with matplotlib, no script and no external resource), so it opens offline and can be mailed or archived.

Charts are `matplotlib.figure.Figure` objects, never pyplot figures: they are not registered with any
GUI backend or pyplot's figure list, so nothing needs closing and memory is freed with the object.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from lmtune.compare.leaderboard import HEADERS, format_cell, table_columns
from lmtune.html_report import CSS, PAGE, STYLE, figure_html
from lmtune.io import write_text

COLORS = {"best": "#dd8452", "strategy": "#4c72b0", "baseline": "#8c8c8c"}


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def write_report(path: str | Path, title: str, entries: list[dict[str, Any]], rows: list[dict[str, Any]],
                 main_metric: str, greater_is_better: bool = True, subtitle: str = "") -> Path:
    """Write the report to `path` atomically and return it. Failed entries are in the table, not the charts."""
    import matplotlib  # imported here: the CLI should not pay for it unless a report is written

    used: set[str] = set()
    scored = [r for r in rows if r.get("status") == "done" and _number(r.get(main_metric)) is not None]
    done = [e for e in entries if e.get("status") == "done"]
    direction = "higher is better" if greater_is_better else "lower is better"
    with matplotlib.rc_context(STYLE):
        charts = [_bar_figure(scored, main_metric, direction, used),
                  _scatter_figure(scored, main_metric, greater_is_better, "trainable_params", used),
                  _scatter_figure(scored, main_metric, greater_is_better, "train_seconds", used)]
        losses = [_loss_figure(e, used) for e in done]
        confusions = [_confusion_figure(e, used) for e in done]
    no_log = [e["name"] for e, figure in zip(done, losses) if figure is None]
    body = [
        _header(title, subtitle, rows, scored, main_metric, direction),
        _table(rows, main_metric, direction),
        _section("charts", f"{main_metric} by entry", "charts", charts),
        _section("loss", "Loss curves", "charts small", [f for f in losses if f],
                 f"No training log (not plotted): {', '.join(no_log)}." if no_log else ""),
        _section("confusion", "Confusion matrices", "charts small", [f for f in confusions if f],
                 "" if any(confusions) else "No entry recorded a confusion matrix."),
        _runs(rows, entries),
    ]
    page = PAGE.format(title=html.escape(title), css=CSS, body="\n".join(b for b in body if b))
    return write_text(path, page)


# --- charts ----------------------------------------------------------------------------------------------

def _color(row: dict[str, Any]) -> str:
    return COLORS["best"] if row.get("rank") == 1 else COLORS.get(row.get("kind"), COLORS["strategy"])


def _bar_figure(scored: list[dict], metric: str, direction: str, used: set[str]) -> str:
    from matplotlib.figure import Figure

    if not scored:
        return f'<p class="note">No finished entry has a {html.escape(metric)}.</p>'
    fig = Figure(figsize=(6.4, 1.0 + 0.42 * len(scored)), layout="constrained")
    ax = fig.subplots()
    values = [r[metric] for r in scored]
    ax.barh(range(len(scored)), values, color=[_color(r) for r in scored], height=0.62)
    ax.set_yticks(range(len(scored)), [str(r["name"]) for r in scored])
    ax.invert_yaxis()  # best on top, as in the table
    ax.grid(axis="y", visible=False)
    for y, value in enumerate(values):
        ax.annotate(f"{value:.3f}", (value, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
    ax.margins(x=0.14)
    ax.set_xlabel(f"{metric} ({direction})")
    return figure_html(used, "main-metric", fig, f"{metric} per entry ({direction}). Orange: best; blue: "
                   "fine-tuning strategies; grey: baselines.")


def _scatter_figure(scored: list[dict], metric: str, greater: bool, key: str, used: set[str]) -> str:
    from matplotlib.figure import Figure

    chart, label = ("params", "trainable parameters") if key == "trainable_params" else ("time", "training time (s)")
    points = [r for r in scored if (_number(r.get(key)) or 0) > 0]  # a log axis has no place for 0 or None
    missing = [str(r["name"]) for r in scored if r not in points]
    note = f" Not plotted (no {label}): {', '.join(missing)}." if missing else ""
    if not points:
        return f'<p class="note" id="chart-{chart}-missing">No entry has {html.escape(label)}.{html.escape(note)}</p>'
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    xs, ys = [float(r[key]) for r in points], [float(r[metric]) for r in points]
    ax.scatter(xs, ys, c=[_color(r) for r in points], s=60, zorder=3, edgecolors="white", linewidths=0.8)
    # Neighbours along x get their labels alternately above and below, so close points do not share a spot.
    order = sorted(range(len(points)), key=lambda i: xs[i])
    for place, i in enumerate(order):
        ax.annotate(str(points[i]["name"]), (xs[i], ys[i]), xytext=(6, 5 if place % 2 else -12),
                    textcoords="offset points", fontsize=9)
    log = chart == "params" or max(xs) / min(xs) > 30
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel(f"{label}{' (log scale)' if log else ''}")
    ax.set_ylabel(metric)
    better = "top left" if greater else "bottom left"
    return figure_html(used, chart, fig, f"{metric} against {label}: the {better} is better and cheaper.{note}")


def _series(log: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(line.get("step", line.get("epoch")), line.get(key)) for line in log]
    points = [(x, y) for x, y in points if _number(x) is not None and _number(y) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _loss_figure(entry: dict[str, Any], used: set[str]) -> str | None:
    from matplotlib.figure import Figure

    log = entry.get("log") or []
    train, val = _series(log, "loss"), _series(log, "eval_loss")
    if not train[0] and not val[0]:
        return None
    fig = Figure(figsize=(4.6, 3.0), layout="constrained")
    ax = fig.subplots()
    if train[0]:
        ax.plot(*train, color=COLORS["strategy"], linewidth=1.6, label="training")
    if val[0]:
        ax.plot(*val, color=COLORS["best"], marker="o", markersize=4, linewidth=1.6, label="validation")
    ax.set_xlabel("step" if any("step" in line for line in log) else "epoch")
    ax.set_ylabel("loss")
    ax.set_title(str(entry["name"]), loc="left", fontweight="bold")
    ax.legend(frameon=False, fontsize=8)
    return figure_html(used, "loss", fig, f"{entry['name']}: training and validation loss.", entry["name"])


def _confusion_figure(entry: dict[str, Any], used: set[str]) -> str | None:
    from matplotlib.figure import Figure

    matrix = entry.get("confusion_matrix")
    size = len(matrix) if isinstance(matrix, list) else 0
    if not size or any(not isinstance(r, list) or len(r) != size for r in matrix):
        return None  # missing or not square: nothing sensible to draw
    labels = [str(x) for x in entry.get("labels") or []]
    labels = labels if len(labels) == size else [str(i) for i in range(size)]
    side = min(2.6 + 0.42 * size, 9.0)
    fig = Figure(figsize=(side + 0.6, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    ax.grid(False)
    top = max(max(r) for r in matrix) or 1
    if size <= 20:  # beyond that the counts are unreadable; the colours still tell
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, f"{count:,}", ha="center", va="center", fontsize=9 if size <= 8 else 7,
                        color="white" if count > top / 2 else "#1f2328")
    rotate = size > 4 or max(map(len, labels)) > 6
    ax.set_xticks(range(size), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(size), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(str(entry["name"]), loc="left", fontweight="bold")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return figure_html(used, "confusion", fig, f"{entry['name']}: true label (rows) against predicted label "
                   "(columns), counts on the evaluation set.", entry["name"], wide=size > 6)


# --- page ------------------------------------------------------------------------------------------------

def _header(title: str, subtitle: str, rows: list[dict], scored: list[dict], metric: str, direction: str) -> str:
    failed = sum(r.get("status") == "failed" for r in rows)
    best = ", ".join(f"<b>{html.escape(str(r['name']))}</b>" for r in scored if r.get("rank") == 1)
    count = f"{len(rows)} {'entry' if len(rows) == 1 else 'entries'}{f', {failed} failed' if failed else ''}."
    result = (f"Best on {html.escape(metric)} ({direction}): {best} with {format_cell(metric, scored[0][metric])}."
              if scored else f"No entry has a {html.escape(metric)}.")
    summary = f"{count} {result}"
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return f'<header><h1>{html.escape(title)}</h1>{sub}<p class="summary">{summary}</p></header>'


def _numeric(column: str) -> bool:
    """Right-aligned columns: everything but the text ones (metric columns included, whatever their name)."""
    return column not in ("name", "kind", "method", "status")


def _table(rows: list[dict[str, Any]], metric: str, direction: str) -> str:
    columns = table_columns(rows, metric)
    head = "".join(f'<th class="{"num" if _numeric(c) else ""}{" main" if c == metric else ""}">'
                   f"{html.escape(HEADERS.get(c, c))}</th>" for c in columns)
    body = [_table_row(row, columns, metric) for row in rows]
    legend = (f"Ranked on <b>{html.escape(metric)}</b> ({direction}). <b>gap to best</b>: the entry's "
              f"{html.escape(metric)} minus the best one's, signed so that 0 is the best and a negative number "
              "is worse (for a lower-is-better metric, -0.05 means 0.05 higher). Sizes in decimal units "
              "(1 KB = 1000 bytes); times are wall-clock seconds of training.")
    return (f'<section id="leaderboard"><h2>Leaderboard</h2><div class="table-wrap">'
            f'<table id="leaderboard-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f'</table></div><p class="legend">{legend}</p></section>')


def _table_row(row: dict[str, Any], columns: list[str], metric: str) -> str:
    """One `<tr>` per entry; a failed entry's error spans the cells its missing numbers would fill."""
    cells, skip = [], 0
    for index, column in enumerate(columns):
        if skip:
            skip -= 1
            continue
        if row.get("error") and column not in ("rank", "name", "kind", "method", "status"):
            skip = len(columns) - index - 2  # every column up to the status one
            cells.append(f'<td class="error" colspan="{skip + 1}">{html.escape(str(row["error"]))}</td>')
            continue
        classes = ("num" if _numeric(column) else "") + (" main" if column == metric else "")
        cells.append(f'<td class="{classes.strip()}">{html.escape(format_cell(column, row.get(column)))}</td>')
    state = "best" if row.get("rank") == 1 else "failed" if row.get("status") == "failed" else ""
    return f'<tr class="{state}" data-name="{html.escape(str(row.get("name")))}">{"".join(cells)}</tr>'


def _section(section_id: str, heading: str, grid: str, figures: list[str], note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (f'<section id="{section_id}"><h2>{html.escape(heading)}</h2>'
            f'<div class="{grid}">{"".join(figures)}</div>{note_html}</section>')


def _runs(rows: list[dict], entries: list[dict]) -> str:
    folders = {e.get("name"): e.get("run_dir") for e in entries}
    items = "".join(f"<li><b>{html.escape(str(r['name']))}</b>: <code>{html.escape(str(folders.get(r['name'])))}"
                    "</code></li>" for r in rows if folders.get(r["name"]))
    return f'<footer><details><summary>Run folders</summary><ul>{items}</ul></details>' \
           '<p>Written by <code>lmtune compare</code>.</p></footer>'
