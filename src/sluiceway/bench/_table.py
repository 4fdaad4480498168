"""The results as text: a legend, then one table a phase with each engine's figures.

With several runs (``--repeat``) each cell is the median over the runs and a second line
under each engine gives the lowest and highest value.
"""

from __future__ import annotations

from collections.abc import Callable

from ._runner import Result
from ._summary import Row, Spread, summarise

__all__ = ["LEGEND", "render_text"]

LEGEND = """\
M ev/s    events processed per second within the phase, in millions
x slw     this engine's M ev/s divided by sluiceway's in the same run (sluiceway = 1.00)
x ceil    this engine's M ev/s divided by the ceiling's (no queueing) in the same run
p50, p99  priority latency in ms: from submit to the priority handler's start
refused   refusal signals the producer saw (each refused event was retried)
lost      accepted - processed - dead-lettered after the drain (must be 0)
peak MiB  highest resident memory in the phase; +MiB its growth during the phase
(arithmetic)  the io ceiling is computed, not run: shards x 256 / (1 ms + 2 us x 256)
The workload and every figure: docs/workload.md"""


def _f(digits: int, scale: float = 1.0) -> Callable[[float], str]:
    return lambda v: f"{v * scale:.{digits}f}"


# (figure, column header, formatter), in table order
COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("throughput", "M ev/s", _f(3, 1e-6)),
    ("x_slw", "x slw", _f(2)),
    ("x_ceil", "x ceil", _f(2)),
    ("priority_p50_ms", "p50 ms", _f(3)),
    ("priority_p99_ms", "p99 ms", _f(3)),
    ("accepted", "accepted", _f(0)),
    ("refusals", "refused", _f(0)),
    ("processed", "processed", _f(0)),
    ("lost", "lost", _f(0)),
    ("peak_rss_mb", "peak MiB", _f(1)),
    ("rss_growth_mb", "+MiB", _f(1)),
)


def render_text(runs: Result | list[Result]) -> str:
    """A plain-text report: the machine, a legend, a table a phase."""
    runs = [runs] if isinstance(runs, Result) else runs
    n = len(runs)
    m = runs[0].machine
    lines = [f"machine: {m['cpus']} cpus, {m['implementation']} {m['python']}, {m['platform']}"]
    cfg = runs[0].config
    interval = cfg.get("switch_interval", "auto")
    threshold = cfg.get("gc_threshold") or "interpreter's"
    lines.append(f"sluiceway settings: switch_interval={interval!r}, gc_threshold={threshold}")
    if n > 1:
        lines.append(
            f"runs: {n}; each cell is the median of the {n} runs, the min-max line under it "
            "the lowest and highest value"
        )
    lines += ["", LEGEND]
    rows = summarise(runs)
    for phase in dict.fromkeys(r.phase for r in rows):
        lines += ["", f"== {phase}"]
        lines += _table([r for r in rows if r.phase == phase], n > 1)
    return "\n".join(lines)


def _values(row: Row, show: Callable[[Spread, Callable[[float], str]], str]) -> list[str]:
    """The row's cells, ``-`` for a figure the engine does not have; the io ceiling's three."""
    columns = COLUMNS[:3] if row.arithmetic else COLUMNS
    return [
        "-" if (spread := row.figures.get(name)) is None else show(spread, fmt)
        for name, _, fmt in columns
    ]


def _table(rows: list[Row], ranges: bool) -> list[str]:
    header = ["engine", *(title for _, title, _ in COLUMNS)]
    body: list[tuple[list[str], str]] = []  # cells, and a note after them
    for row in rows:
        note = "  (arithmetic)" if row.arithmetic else ""
        body.append(([row.engine, *_values(row, lambda s, f: f(s.median))], note))
        if ranges:
            spread = _values(row, lambda s, f: f"{f(s.min)}-{f(s.max)}")
            body.append((["  min-max", *spread], ""))
    table = [(header, ""), *body]
    widths = [
        max(len(cells[i]) for cells, _ in table if i < len(cells)) for i in range(len(header))
    ]
    out = []
    for cells, note in table:
        padded = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False))
        text = [cells[0].ljust(widths[0]), *padded]  # the io ceiling's row is short
        out.append(" ".join(text) + note)
    return out
