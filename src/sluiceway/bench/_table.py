"""The results as text: one table a phase, each engine's figures and its ratios."""

from __future__ import annotations

from ._runner import PhaseResult, Result

__all__ = ["render_text", "summary"]


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary(result: Result) -> dict[str, dict[str, float | None]]:
    """Per phase: sluiceway's ratio to the ceiling and to each baseline."""
    out: dict[str, dict[str, float | None]] = {}
    phases = dict.fromkeys(r.phase for r in result.results)
    for phase in phases:
        ours = result.get("sluiceway", phase)
        if ours is None:
            continue
        ratios: dict[str, float | None] = {}
        for r in result.results:
            if r.phase == phase and r.engine != "sluiceway" and r.throughput:
                ratios[r.engine] = ours.throughput / r.throughput
        out[phase] = ratios
    return out


def render_text(result: Result) -> str:
    """A plain-text report: a table a phase, ratios against sluiceway and the ceiling."""
    lines = []
    m = result.machine
    lines.append(f"machine: {m['cpus']} cpus, {m['implementation']} {m['python']}, {m['platform']}")
    phases = dict.fromkeys(r.phase for r in result.results)
    for phase in phases:
        rows = [r for r in result.results if r.phase == phase]
        ours = result.get("sluiceway", phase)
        ceiling = result.get("ceiling", phase)
        lines.append("")
        lines.append(f"== {phase}")
        lines.append(
            f"{'engine':15s} {'M ev/s':>8s} {'x slw':>7s} {'x ceil':>7s} {'p50 ms':>8s} "
            f"{'p99 ms':>8s} {'accepted':>9s} {'refused':>8s} {'processed':>9s} {'lost':>5s} "
            f"{'peak MiB':>9s} {'+MiB':>6s}"
        )
        for r in rows:
            lines.append(_row(r, ours, ceiling))
    return "\n".join(lines)


def _row(r: PhaseResult, ours: PhaseResult | None, ceiling: PhaseResult | None) -> str:
    x_ours = f"{r.throughput / ours.throughput:.2f}" if ours and ours.throughput else "-"
    x_ceil = f"{r.throughput / ceiling.throughput:.2f}" if ceiling and ceiling.throughput else "-"
    if r.engine == "ceiling" and not r.accepted:
        return f"{r.engine:15s} {r.throughput / 1e6:8.3f} {x_ours:>7s} {x_ceil:>7s}  (arithmetic)"
    return (
        f"{r.engine:15s} {r.throughput / 1e6:8.3f} {x_ours:>7s} {x_ceil:>7s} "
        f"{_fmt_ms(r.priority_p50_ms):>8s} {_fmt_ms(r.priority_p99_ms):>8s} "
        f"{r.accepted:9d} {r.refusals:8d} {r.processed:9d} {r.lost:5d} "
        f"{r.peak_rss_mb or 0:9.1f} {(r.peak_rss_mb or 0) - (r.rss_before_mb or 0):6.1f}"
    )
