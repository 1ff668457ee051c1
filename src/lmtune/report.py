"""Tables of run metrics for the terminal and for markdown files."""

from __future__ import annotations

from typing import Any

COLUMNS = [
    ("accuracy", "accuracy", ".3f"),
    ("macro_f1", "macro-F1", ".3f"),
    ("roc_auc", "ROC AUC", ".3f"),
    ("trainable_params", "trainable params", ","),
    ("adapter_bytes", "served bytes", ","),
    ("artifact_bytes", "artifact bytes", ","),
    ("train_seconds", "train s", ".0f"),
    ("peak_rss_mb", "peak RSS MB", ".0f"),
]


def _cell(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def metrics_table(rows: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    header = ["strategy"] + [title for _, title, _ in COLUMNS]
    body = [[label] + [_cell(m.get(key), spec) for key, _, spec in COLUMNS] for label, m in rows.items()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])
