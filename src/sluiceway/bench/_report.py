"""``--report PATH``: a self-contained HTML page with the run's tables and plots over time.

The plots are inline SVG drawn here (no plotting library, no network): throughput, queue
depth, batch size and priority p99 per engine, one panel a phase.
"""

from __future__ import annotations

import html
from pathlib import Path

from ._runner import PhaseResult, Result
from ._table import render_text

__all__ = ["render_html", "write_report"]

COLORS = {
    "sluiceway": "#1f77b4",
    "sluiceway-bulk": "#17becf",
    "queue": "#d62728",
    "asyncio": "#ff7f0e",
    "ceiling": "#2ca02c",
}
METRICS = (
    ("throughput", "events/s", 1.0),
    ("depth", "queue depth", 1.0),
    ("batch_size", "batch size", 1.0),
    ("priority_p99_ms", "priority p99 (ms)", 1.0),
)
W, H, PAD = 460, 170, 36


def _plot(rows: list[PhaseResult], metric: str, label: str) -> str:
    series = [(r.engine, [(p["t"], p[metric]) for p in r.series]) for r in rows if r.series]
    points = [pt for _, pts in series for pt in pts]
    if not points:
        return ""
    t_max = max(t for t, _ in points) or 1.0
    v_max = max(v for _, v in points) or 1.0
    parts = [
        f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{PAD}" y="14" font-size="12">{html.escape(label)} (max {v_max:.4g})</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="20" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<text x="{W - 60}" y="{H - 20}" font-size="10">{t_max:.1f} s</text>',
    ]
    for engine, pts in series:
        coords = " ".join(
            f"{PAD + (W - PAD - 8) * t / t_max:.1f},{H - PAD - (H - PAD - 20) * v / v_max:.1f}"
            for t, v in pts
        )
        color = COLORS.get(engine, "#555")
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
        )
    legend_x = PAD + 4
    for engine, _ in series:
        color = COLORS.get(engine, "#555")
        parts.append(
            f'<text x="{legend_x}" y="{H - 6}" font-size="10" fill="{color}">{engine}</text>'
        )
        legend_x += 8 + 7 * len(engine)
    parts.append("</svg>")
    return "".join(parts)


def render_html(result: Result) -> str:
    """The whole report as one HTML string."""
    body = [
        "<h1>sluiceway bench</h1>",
        "<p>Figures are ratios within this run; one machine's absolute numbers are noise.</p>",
        f"<pre>{html.escape(render_text(result))}</pre>",
    ]
    phases = dict.fromkeys(r.phase for r in result.results)
    for phase in phases:
        rows = [r for r in result.results if r.phase == phase]
        body.append(f"<h2>{html.escape(phase)}</h2><div>")
        body.extend(_plot(rows, metric, label) for metric, label, _ in METRICS)
        body.append("</div>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sluiceway bench</title>"
        "<style>body{font-family:sans-serif;margin:2em} svg{margin:4px;border:1px solid #eee}"
        "</style></head><body>" + "".join(body) + "</body></html>"
    )


def write_report(result: Result, path: Path) -> None:
    """Write the HTML report to ``path``."""
    path.write_text(render_html(result), encoding="utf-8")
