"""What the HTML reports share (`lmtune compare`'s and `lmtune tune`'s): one self-contained page (inline CSS, charts
as inline SVG drawn with matplotlib, no script and no external resource), so it opens offline and can be mailed or
archived.

Charts are `matplotlib.figure.Figure` objects, never pyplot figures: they are not registered with any GUI backend
or pyplot's figure list, so nothing needs closing and memory is freed with the object.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

STYLE = {"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
         "grid.color": "#e3e6ea", "grid.linewidth": 0.8, "axes.axisbelow": True, "svg.hashsalt": "lmtune",
         "axes.edgecolor": "#59636e", "axes.titlesize": 10}


def slug(name: Any) -> str:
    """The part of a chart id that names an entry: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "entry"


def _svg(fig: Any, prefix: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)
    # Several SVGs share one page: prefix their internal ids so clip paths and glyphs never collide.
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    # Drop the fixed size in pt: CSS fits the chart to its box, the viewBox keeps its shape.
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)


def figure_html(used: set[str], kind: str, fig: Any, caption: str, name: str | None = None, wide: bool = False) -> str:
    chart_id = f"chart-{kind}" if name is None else f"chart-{kind}-{slug(name)}"
    base, number = chart_id, 2
    while chart_id in used:  # two names with one slug ("LoRA r8", "lora-r8") still get distinct ids
        chart_id, number = f"{base}-{number}", number + 1
    used.add(chart_id)
    attrs = "" if name is None else f' data-entry="{html.escape(str(name))}"'
    attrs += ' class="wide"' if wide else ""
    return (f'<figure id="{chart_id}"{attrs}>{_svg(fig, chart_id)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --soft: #f6f8fa; --best: #fdf0e6; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 40px; background: #fff; min-height: 100vh; }
h1 { font-size: 1.65rem; margin: 0 0 2px; } h2 { font-size: 1.2rem; margin: 34px 0 12px; }
.subtitle { color: var(--muted); margin: 0; } .summary { margin: 10px 0 0; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 9px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: normal; vertical-align: bottom; }
tbody tr:last-child td { border-bottom: 0; }
.num { text-align: right; } .main { font-weight: 600; }
tr.best td { background: var(--best); } tr.failed td { color: var(--muted); }
td.error { color: #b42318; white-space: normal; font-size: 12.5px; }
.legend, .note, figcaption, footer { color: var(--muted); font-size: 13px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 18px;
  align-items: start; }
.charts.small { grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); }
figure { margin: 0; padding: 12px; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
figure.wide { grid-column: 1 / -1; justify-self: start; width: min(100%, 780px); }
figure svg { display: block; width: 100%; height: auto; }
figcaption { margin-top: 6px; }
footer { margin-top: 36px; border-top: 1px solid var(--line); padding-top: 10px; }
code { font-size: 12px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""
