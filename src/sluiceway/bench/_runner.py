"""Run the selected phases for the selected engines and collect their figures."""

from __future__ import annotations

import gc
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._config import BenchConfig, PhaseSpec
from ._engines import ENGINE_TYPES, Engine
from ._sampler import Sampler, rss_mb
from ._workload import IO_BASE, IO_PER_EVENT, Sink

__all__ = ["PhaseResult", "Result", "io_ceiling", "run_bench"]


def io_ceiling(shards: int, batch: int) -> float:
    """What the io downstream can take: shards x batch / (1 ms + 2 us x batch)."""
    return shards * batch / (IO_BASE + IO_PER_EVENT * batch)


@dataclass(slots=True)
class PhaseResult:
    """One engine in one phase."""

    engine: str
    phase: str
    seconds: float
    throughput: float  # processed events/s within the window
    accepted: int
    refusals: int
    processed: int
    dead_lettered: int
    lost: int
    priority_p50_ms: float | None
    priority_p99_ms: float | None
    peak_rss_mb: float | None = None  # highest resident memory sampled during the phase
    rss_before_mb: float | None = None  # resident memory when the phase started
    series: list[dict[str, float]] = field(default_factory=list)
    priority_lane: bool = True  # False: no lane of their own for priority events (ceiling, bulk)
    run: int = 0  # which run of a --repeat (0-based)


@dataclass(slots=True)
class Result:
    """A whole run: settings, machine, sluiceway's version, start time, every phase result."""

    config: dict[str, Any]
    machine: dict[str, Any]
    results: list[PhaseResult] = field(default_factory=list)
    version: str = ""
    started: str = ""  # UTC, ISO 8601

    def get(self, engine: str, phase: str) -> PhaseResult | None:
        """The result for one engine in one phase, if it ran."""
        for r in self.results:
            if r.engine == engine and r.phase == phase:
                return r
        return None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "config": self.config,
            "machine": self.machine,
            "version": self.version,
            "started": self.started,
            "results": [asdict(r) for r in self.results],
        }


def _percentile_ms(values: list[int], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] / 1e6


Listener = Callable[[str, Engine, PhaseSpec, "Sampler | None", PhaseResult | None], None]


def run_bench(cfg: BenchConfig, listener: Listener | None = None, run: int = 0) -> Result:
    """Run every selected phase for every selected engine, in workload order.

    ``run`` numbers this run among the runs of a ``--repeat``; it is recorded in each result.
    """
    import datetime
    import os
    import platform

    from .. import __version__

    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = Result(asdict(cfg), machine, version=__version__, started=started)
    reference: dict[str, float] = {}
    for spec in cfg.phase_specs():
        rate = None
        if spec.pace is not None:
            base = reference.get(spec.pace_of or "")
            if base is None:
                base = io_ceiling(cfg.shards, cfg.batch_size) * 0.5
            rate = base * spec.pace
        names = list(cfg.engines)
        if spec.name == "saturate-cpu" and cfg.submit_many > 0 and "sluiceway" in names:
            names.insert(names.index("sluiceway") + 1, "sluiceway-bulk")
        for name in names:
            engine = ENGINE_TYPES[name](cfg)
            phase = _run_one(engine, spec, rate, listener)
            phase.run = run
            result.results.append(phase)
            if name == "sluiceway" and spec.pace is None:
                reference[spec.name] = phase.throughput
    return result


def _run_one(
    engine: Engine, spec: PhaseSpec, rate: float | None, listener: Listener | None
) -> PhaseResult:
    sink = Sink(spec.handler)
    if engine.name == "ceiling" and spec.handler == "io":
        # The io ceiling is arithmetic (docs/workload.md): what the downstream can take.
        return PhaseResult(
            "ceiling",
            spec.name,
            0.0,
            io_ceiling(engine.cfg.shards, 256),
            0,
            0,
            0,
            0,
            0,
            None,
            None,
            priority_lane=False,
        )
    gc.collect()
    rss_before = rss_mb()
    sampler = Sampler(engine, sink)
    if listener is not None:
        listener("start", engine, spec, sampler, None)
    sampler.start()
    try:
        outcome = engine.run(sink, spec.seconds, rate)
    finally:
        series = sampler.stop()
    latencies = list(sink.latencies)
    throughput = outcome.processed_in_window / outcome.window if outcome.window else 0.0
    accepted = outcome.produced.accepted
    phase = PhaseResult(
        engine=engine.name,
        phase=spec.name,
        seconds=outcome.window,
        throughput=throughput,
        accepted=accepted,
        refusals=outcome.produced.refusals,
        processed=outcome.processed,
        dead_lettered=outcome.dead_lettered,
        lost=accepted - outcome.processed - outcome.dead_lettered,
        priority_p50_ms=_percentile_ms(latencies, 0.5),
        priority_p99_ms=_percentile_ms(latencies, 0.99),
        series=series,
        priority_lane=engine.priority_lane,
        peak_rss_mb=max([rss_before, *(p["rss_mb"] for p in series)]),
        rss_before_mb=rss_before,
    )
    if listener is not None:
        listener("end", engine, spec, sampler, phase)
    return phase


def median(values: list[float]) -> float:
    """The median of ``values`` (0.0 for none)."""
    return statistics.median(values) if values else 0.0


def say(text: str) -> None:
    """Print a progress line to stderr."""
    print(text, file=sys.stderr, flush=True)
