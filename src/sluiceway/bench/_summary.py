"""Every figure of one or more runs, per phase and engine: its median and its spread.

Absolute figures on a shared machine swing by 15% and more between runs, so
``sluiceway bench --repeat N`` runs the whole selection N times and reports, for each figure,
the median over the runs and the lowest and highest value. Ratios (``x_slw``, ``x_ceil``)
are taken within each run first, then summarised, as the workload's figures are ratios
between engines of one run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ._runner import PhaseResult, Result

__all__ = ["FIGURES", "Row", "Spread", "figures_of", "summarise"]

# Every figure a row reports, in table order.
FIGURES = (
    "throughput",
    "x_slw",
    "x_ceil",
    "priority_p50_ms",
    "priority_p99_ms",
    "accepted",
    "refusals",
    "processed",
    "dead_lettered",
    "lost",
    "peak_rss_mb",
    "rss_growth_mb",
)


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure over the runs: the median, the lowest and the highest value."""

    median: float
    min: float
    max: float
    runs: int  # how many runs had the figure

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """The spread of ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values), len(values))


@dataclass(frozen=True, slots=True)
class Row:
    """One engine in one phase, summarised over the runs."""

    phase: str
    engine: str
    arithmetic: bool  # the io ceiling: computed, not run
    figures: dict[str, Spread]  # a figure no run had is absent

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        return {
            "phase": self.phase,
            "engine": self.engine,
            "arithmetic": self.arithmetic,
            **{
                name: {"median": s.median, "min": s.min, "max": s.max, "runs": s.runs}
                for name, s in self.figures.items()
            },
        }


def figures_of(r: PhaseResult, result: Result) -> dict[str, float]:
    """The figures of one phase result; ratios against sluiceway and the ceiling of its run."""
    out: dict[str, float] = {"throughput": r.throughput}
    ours = result.get("sluiceway", r.phase)
    ceiling = result.get("ceiling", r.phase)
    if ours is not None and ours.throughput:
        out["x_slw"] = r.throughput / ours.throughput
    if ceiling is not None and ceiling.throughput:
        out["x_ceil"] = r.throughput / ceiling.throughput
    if is_arithmetic(r):
        return out
    if r.priority_lane and r.priority_p50_ms is not None and r.priority_p99_ms is not None:
        # Only engines with a priority lane: the ceiling handles priority events inline.
        out["priority_p50_ms"] = r.priority_p50_ms
        out["priority_p99_ms"] = r.priority_p99_ms
    out.update(
        accepted=r.accepted,
        refusals=r.refusals,
        processed=r.processed,
        dead_lettered=r.dead_lettered,
        lost=r.lost,
    )
    if r.peak_rss_mb is not None:
        out["peak_rss_mb"] = r.peak_rss_mb
        out["rss_growth_mb"] = r.peak_rss_mb - (r.rss_before_mb or 0.0)
    return out


def is_arithmetic(r: PhaseResult) -> bool:
    """Whether ``r`` is the io ceiling, computed rather than run."""
    return r.engine == "ceiling" and not r.accepted and not r.seconds


def summarise(runs: list[Result]) -> list[Row]:
    """Per phase and engine, in the order they ran: every figure's median and spread."""
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    arithmetic: dict[tuple[str, str], bool] = {}
    for result in runs:
        for r in result.results:
            key = (r.phase, r.engine)
            per = values.setdefault(key, {})
            arithmetic[key] = is_arithmetic(r)
            for name, value in figures_of(r, result).items():
                per.setdefault(name, []).append(float(value))
    return [
        Row(
            phase,
            engine,
            arithmetic[phase, engine],
            {name: Spread.of(per[name]) for name in FIGURES if name in per},
        )
        for (phase, engine), per in values.items()
    ]
