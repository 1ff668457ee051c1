"""The transfer-gain experiment's read-out: a compare folder whose entries are named `<arm> n=<size>` (e.g.
`pretrained n=500`, `scratch n=500`; examples/pretrain_transfer_gain.yaml) → accuracy per arm and size, the gap,
a markdown table and an SVG plot (accuracy against training size, log x, the gap annotated)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ENTRY = re.compile(r"^(?P<arm>.+?)[ -]n=(?P<size>\d+)$")


def collect(folder: str | Path, metric: str = "accuracy") -> dict[str, dict[int, dict[str, Any]]]:
    """{arm: {size: {metric, train_seconds, steps}}} from every finished entry folder."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for entry in sorted(Path(folder).iterdir()):
        match = ENTRY.match(entry.name)
        metrics_file = entry / "metrics.json"
        if not match or not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text())
        found.setdefault(match["arm"], {})[int(match["size"])] = {
            metric: metrics.get(metric), "train_seconds": metrics.get("train_seconds"), "steps": metrics.get("global_step"),
        }
    return found


def gaps(results: dict[str, dict[int, dict[str, Any]]], better: str = "pretrained", worse: str = "scratch",
         metric: str = "accuracy") -> list[dict[str, Any]]:
    rows = []
    for size in sorted(set(results.get(better, {})) & set(results.get(worse, {}))):
        a, b = results[better][size], results[worse][size]
        rows.append({"size": size, better: a[metric], worse: b[metric], "gap": a[metric] - b[metric],
                     "steps": a["steps"], f"{better}_seconds": a["train_seconds"], f"{worse}_seconds": b["train_seconds"]})
    return rows


def markdown_table(rows: list[dict[str, Any]], better: str = "pretrained", worse: str = "scratch") -> str:
    lines = [f"| training sentences | steps | {better} | {worse} | gap | train s ({better} / {worse}) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['steps']} | {r[better]:.3f} | {r[worse]:.3f} | **{r['gap']:+.3f}** | "
                     f"{r[f'{better}_seconds']:.0f} / {r[f'{worse}_seconds']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str | Path, title: str, better: str = "pretrained", worse: str = "scratch",
         metric: str = "accuracy", floor: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmtune.io import atomic_write

    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(sizes, [r[better] for r in rows], "o-", color="#1f77b4", label=f"{better} (MiniLM, fine-tuned)")
    ax.plot(sizes, [r[worse] for r in rows], "s--", color="#d62728", label=f"{worse} (same architecture, random init)")
    for r in rows:
        ax.annotate("", xy=(r["size"], r[worse]), xytext=(r["size"], r[better]),
                    arrowprops={"arrowstyle": "<->", "color": "#555", "lw": 0.8})
        ax.text(r["size"] * 1.07, (r[better] + r[worse]) / 2, f"{r['gap']:+.3f}", fontsize=8, va="center", color="#333")
    if floor is not None:
        ax.axhline(floor, color="#999", lw=0.8, ls=":", label=f"majority class ({floor:.3f})")
    ax.set_xscale("log")
    ax.set_xlim(sizes[0] / 1.5, sizes[-1] * 1.8)  # room for the last gap label
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training sentences (SST-2, log scale)")
    ax.set_ylabel(f"dev {metric} (872 sentences)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="svg"))
    plt.close(fig)
    return out
