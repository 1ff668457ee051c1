"""The leaderboard of `lmtune compare`: entry results ranked on the task's main metric, written as CSV and
JSON, and shown as an aligned plain-text table.

`gap_to_best` is the main metric's distance to the best entry, signed so that it is 0 for the best entry
and negative for every worse one, whatever the metric's direction (for a lower-is-better metric such as
a loss, an entry with loss 0.70 behind a best of 0.60 has a gap of -0.10). It is None where an entry has
no main metric (failed, or the metric is missing).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

from lmtune.io import write_json, write_text

# Columns every row has, before and after the task's metrics.
HEAD_COLUMNS = ("rank", "name", "kind", "method")
TAIL_COLUMNS = ("trainable_params", "trainable_percent", "artifact_bytes", "train_seconds", "peak_rss_mb",
                "gap_to_best", "status", "error")
FIXED_COLUMNS = frozenset(HEAD_COLUMNS + TAIL_COLUMNS)


def _number(value: Any) -> float | None:
    """A finite number, or None (NaN and inf rank like a missing value instead of poisoning the sort)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_keys(entries: Iterable[dict[str, Any]], main_metric: str) -> list[str]:
    """Union of the entries' scalar metric names: the main metric first, then in order of first appearance."""
    keys = [main_metric]
    for entry in entries:
        for key, value in (entry.get("metrics") or {}).items():
            scalar = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            if scalar and key not in keys and key not in FIXED_COLUMNS:
                keys.append(key)
    return keys


def _sort_key(entry: dict[str, Any], main_metric: str, greater_is_better: bool) -> tuple:
    # Finished entries with a main metric first (best first), then finished ones without it, then failures.
    value = _number((entry.get("metrics") or {}).get(main_metric))
    if entry.get("status") != "done":
        return (2, 0.0)
    if value is None:
        return (1, 0.0)
    return (0, -value if greater_is_better else value)


def leaderboard_rows(entries: list[dict[str, Any]], main_metric: str,
                     greater_is_better: bool = True) -> list[dict[str, Any]]:
    """One row per entry, best first and failed entries last; ties share a rank ("1, 2, 2, 4").

    Entries without a main metric (failed, or missing) get rank None and gap_to_best None.
    """
    keys = metric_keys(entries, main_metric)
    ordered = sorted(entries, key=lambda e: _sort_key(e, main_metric, greater_is_better))  # stable on ties
    scored = [_number((e.get("metrics") or {}).get(main_metric)) for e in ordered if e.get("status") == "done"]
    scored = [v for v in scored if v is not None]
    best = (max(scored) if greater_is_better else min(scored)) if scored else None
    rows, previous, rank = [], None, 0
    for position, entry in enumerate(ordered, 1):
        value = _number((entry.get("metrics") or {}).get(main_metric)) if entry.get("status") == "done" else None
        if value is not None and value != previous:
            rank, previous = position, value
        rows.append(_row(entry, keys, rank if value is not None else None, _gap(value, best, greater_is_better)))
    return rows


def _gap(value: float | None, best: float | None, greater_is_better: bool) -> float | None:
    if value is None or best is None:
        return None
    gap = value - best if greater_is_better else best - value
    return 0.0 if abs(gap) < 1e-12 else gap  # no "-0.000" from float noise


def _row(entry: dict[str, Any], keys: list[str], rank: int | None, gap: float | None) -> dict[str, Any]:
    metrics = entry.get("metrics") or {}
    row: dict[str, Any] = {"rank": rank, **{k: entry.get(k) for k in HEAD_COLUMNS[1:]}}
    row.update({key: metrics.get(key) if _number(metrics.get(key)) is not None else None for key in keys})
    row.update({k: entry.get(k) for k in TAIL_COLUMNS[:5]})
    row.update(gap_to_best=gap, status=entry.get("status"), error=entry.get("error"))
    return row


def row_metric_keys(rows: list[dict[str, Any]], main_metric: str) -> list[str]:
    """The metric columns of leaderboard rows (every key that is not a fixed column), main metric first."""
    keys = [k for k in (rows[0] if rows else {}) if k not in FIXED_COLUMNS]
    return sorted(keys, key=lambda k: k != main_metric)  # stable: only moves the main metric to the front


def write_leaderboard(rows: list[dict[str, Any]], folder: str | Path) -> list[Path]:
    """`leaderboard.csv` (empty cells for None) and `leaderboard.json` (a list of rows), each written atomically."""
    folder = Path(folder)
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else list(HEAD_COLUMNS + TAIL_COLUMNS)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return [write_text(folder / "leaderboard.csv", buffer.getvalue()), write_json(folder / "leaderboard.json", rows)]


# --- formatting, shared with the HTML report -------------------------------------------------------------

def human_bytes(value: Any) -> str:
    """Decimal units (1 KB = 1000 bytes), one decimal above bytes."""
    number = _number(value)
    if number is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(number) < 1000 or unit == "GB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1000
    return "—"  # unreachable


def format_cell(key: str, value: Any) -> str:
    """One cell as text: metrics 3 decimals, counts with thousands separators, bytes in KB/MB, seconds whole."""
    if key in ("name", "kind", "method", "status", "error"):
        return "—" if value in (None, "") else str(value)
    if key == "rank":
        return "—" if value is None else str(value)
    if key == "artifact_bytes":
        return human_bytes(value)
    number = _number(value)
    if number is None:
        return "—"
    if key == "trainable_params":
        return f"{number:,.0f}"
    if key == "trainable_percent":
        return f"{number:.2f}%"
    if key in ("train_seconds", "peak_rss_mb"):
        return f"{number:,.0f}"
    if key == "gap_to_best":
        return f"{number:+.3f}" if number else "0.000"
    return f"{number:,.0f}" if isinstance(value, int) else f"{number:.3f}"


HEADERS = {"rank": "#", "trainable_params": "trainable params", "trainable_percent": "trainable %",
           "artifact_bytes": "artifact", "train_seconds": "train s", "peak_rss_mb": "peak RSS MB",
           "gap_to_best": "gap to best"}


def table_columns(rows: list[dict[str, Any]], main_metric: str) -> list[str]:
    """The displayed columns (the error goes below the table, it is too long for a cell)."""
    return [*HEAD_COLUMNS, *row_metric_keys(rows, main_metric), *TAIL_COLUMNS[:-1]]


def terminal_table(rows: list[dict[str, Any]], main_metric: str) -> str:
    """An aligned plain-text table (text left, numbers right), then one line per failed entry with its error."""
    columns = table_columns(rows, main_metric)
    header = [HEADERS.get(c, c) for c in columns]
    body = [[format_cell(c, row.get(c)) for c in columns] for row in rows]
    left = {i for i, c in enumerate(columns) if c in ("name", "kind", "method", "status")}
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    notes = [f"  {row['name']} failed: {row['error']}" for row in rows if row.get("status") == "failed"]
    legend = f"gap to best: {main_metric} difference to the best entry (0 = best, negative = worse)"
    return "\n".join(lines + [""] + ([*notes, ""] if notes else []) + [legend])
