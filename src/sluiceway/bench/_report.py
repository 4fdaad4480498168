"""``--report PATH``: a self-contained HTML page with the run's settings, table and plots.

The plots are inline SVG drawn here (no plotting library, no network): throughput, queue
depth, batch size and priority p99 over time, one row of panels a phase, each with ticked
axes and units. The priority panel shows only the engines with a priority lane. With several
runs (``--repeat``) the table gives medians and spreads, and each engine's curves come from
its run closest to the median throughput of that phase.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from ._runner import PhaseResult, Result
from ._table import render_text

__all__ = ["render_html", "write_report"]

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); the bulk
# variant is also dashed, so no two engines differ by colour alone.
STYLES = {
    "sluiceway": ("#0072B2", ""),
    "sluiceway-bulk": ("#CC79A7", "5,3"),
    "queue": ("#D55E00", ""),
    "asyncio": ("#E69F00", ""),
    "ceiling": ("#009E73", ""),
}
# (series key, panel title, y-axis unit, scale applied to the values, priority-only)
METRICS = (
    ("throughput", "throughput", "M events/s", 1e-6, False),
    ("depth", "queue depth", "events", 1.0, False),
    ("batch_size", "batch size", "events", 1.0, False),
    ("priority_p99_ms", "priority latency p99", "ms", 1.0, True),
)
W, H = 470, 230
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 24, 58  # plot margins: room for tick labels and legend


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``, about ``count`` of them."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / (count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def _plot(rows: list[PhaseResult], metric: str, title: str, unit: str, scale: float) -> str:
    series = [(r.engine, [(p["t"], p[metric] * scale) for p in r.series]) for r in rows if r.series]
    points = [pt for _, pts in series for pt in pts]
    if not points:
        return ""
    x_ticks = nice_ticks(max(t for t, _ in points))
    y_ticks = nice_ticks(max(v for _, v in points))
    x_max, y_max = x_ticks[-1], y_ticks[-1]
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * t / x_max

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / y_max)

    parts = [
        f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg" font-size="10">',
        f'<text x="{LEFT}" y="14" font-size="12" font-weight="bold">'
        f"{html.escape(title)} ({html.escape(unit)})</text>",
    ]
    for v in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{W - RIGHT}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<line x1="{LEFT - 4}" y1="{y(v):.1f}" x2="{LEFT}" y2="{y(v):.1f}" stroke="#666"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 3:.1f}" text-anchor="end">{_label(v)}</text>'
        )
    for t in x_ticks:
        parts.append(
            f'<line x1="{x(t):.1f}" y1="{TOP + plot_h}" x2="{x(t):.1f}" y2="{TOP + plot_h + 4}" '
            f'stroke="#666"/><text x="{x(t):.1f}" y="{TOP + plot_h + 15}" '
            f'text-anchor="middle">{_label(t)}</text>'
        )
    parts += [
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{W - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="#666"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#666"/>',
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 28}" text-anchor="middle">'
        "time in the phase (s)</text>",
        f'<text transform="translate(12,{TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(unit)}</text>',
    ]
    legend_x = float(LEFT)
    for engine, pts in series:
        color, dash = STYLES.get(engine, ("#555555", "2,2"))
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dashes} points="{coords}"/>'
        )
        if len(pts) < 3:  # too few samples for a visible line (a very short phase)
            parts.extend(
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>' for t, v in pts
            )
        legend_y = H - 8
        parts.append(
            f'<line x1="{legend_x:.1f}" y1="{legend_y - 3}" x2="{legend_x + 16:.1f}" '
            f'y2="{legend_y - 3}" stroke="{color}" stroke-width="2"{dashes}/>'
            f'<text x="{legend_x + 20:.1f}" y="{legend_y}">{html.escape(engine)}</text>'
        )
        legend_x += 28 + 6 * len(engine)
    parts.append("</svg>")
    return "".join(parts)


def _representative(runs: list[Result], phase: str, engine: str) -> PhaseResult | None:
    """The engine's result in ``phase`` from the run closest to its median throughput."""
    found = [r for run in runs for r in run.results if r.phase == phase and r.engine == engine]
    if not found:
        return None
    middle = statistics.median(r.throughput for r in found)
    return min(found, key=lambda r: abs(r.throughput - middle))


def _settings(runs: list[Result]) -> str:
    first = runs[0]
    rows: list[tuple[str, object]] = [
        ("sluiceway version", first.version),
        ("started (UTC)", first.started),
        ("runs", len(runs)),
        *((f"machine: {k}", v) for k, v in first.machine.items()),
        *((k, v) for k, v in first.config.items() if k != "extra"),
    ]
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_setting(v))}</td></tr>"
        for k, v in rows
    )
    return f"<h2>Settings</h2><table class='settings'>{cells}</table>"


def _setting(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "-" if value is None else str(value)


def render_html(runs: Result | list[Result]) -> str:
    """The whole report as one HTML string."""
    runs = [runs] if isinstance(runs, Result) else runs
    body = [
        "<h1>sluiceway bench</h1>",
        "<p>Figures are ratios within a run; one machine's absolute numbers are noise. "
        "The workload is described in docs/workload.md.</p>",
        _settings(runs),
        "<h2>Results</h2>",
        f"<pre>{html.escape(render_text(runs))}</pre>",
    ]
    if len(runs) > 1:
        body.append(
            "<p>Curves: for each engine and phase, the run closest to its median throughput.</p>"
        )
    phases = dict.fromkeys(r.phase for run in runs for r in run.results)
    for phase in phases:
        engines = dict.fromkeys(r.engine for run in runs for r in run.results if r.phase == phase)
        rows = [r for e in engines if (r := _representative(runs, phase, e)) is not None]
        body.append(f"<h2>{html.escape(phase)}</h2><div>")
        for metric, title, unit, scale, priority_only in METRICS:
            keep: Callable[[PhaseResult], bool] = (
                (lambda r: r.priority_lane) if priority_only else (lambda r: True)
            )
            body.append(_plot([r for r in rows if keep(r)], metric, title, unit, scale))
        body.append("</div>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sluiceway bench</title>"
        "<style>body{font-family:sans-serif;margin:2em} svg{margin:4px;border:1px solid #eee}"
        " table.settings{border-collapse:collapse;font-size:13px}"
        " table.settings th{text-align:left;padding:1px 12px 1px 0;font-weight:normal;"
        "color:#555}</style></head><body>" + "".join(body) + "</body></html>"
    )


def write_report(runs: Result | list[Result], path: Path) -> None:
    """Write the HTML report to ``path``."""
    path.write_text(render_html(runs), encoding="utf-8")
