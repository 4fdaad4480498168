"""``sluiceway bench``: argument handling, the results table, JSON, the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._config import PHASES, QUICK_SCALE, BenchConfig
from ._runner import PhaseResult, Result, run_bench
from ._summary import summarise
from ._table import render_text

__all__ = ["as_json", "bench_command", "config_from_args"]


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The bench settings the command line asks for."""
    scale = QUICK_SCALE * args.duration_scale if args.quick else args.duration_scale
    phases = args.phases or tuple(p.name for p in PHASES)
    return BenchConfig(
        engines=tuple(args.engines),
        phases=tuple(phases),
        duration_scale=scale,
        shards=args.shards,
        batch_size=args.batch_size,
        handler=args.handler,
        switch_interval=args.switch_interval,
        gc_threshold=args.gc_threshold,
        submit_many=args.submit_many,
    )


def bench_command(args: argparse.Namespace) -> int:
    """Run the bench ``--repeat`` times; exit 1 if any engine lost an accepted event."""
    cfg = config_from_args(args)
    repeat = args.repeat
    live = not args.no_live and sys.stderr.isatty()  # the live view draws on stderr
    runs: list[Result] = []
    for i in range(repeat):
        if repeat > 1:
            print(f"run {i + 1} of {repeat}", file=sys.stderr, flush=True)
        runs.append(_run(cfg, live, i))
    print(render_text(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(runs), indent=2))
    if args.report:
        from ._report import write_report

        write_report(runs, Path(args.report))
    lost = [r for run in runs for r in run.results if r.lost]
    if lost:
        for r in lost:
            print(
                f"LOST: {r.engine} lost {r.lost} accepted events in {r.phase} (run {r.run + 1})",
                file=sys.stderr,
            )
        return 1
    return 0


def as_json(runs: list[Result]) -> dict[str, Any]:
    """``--json``: the settings, every run's raw results, and every figure's median and spread.

    ``results`` holds every phase result of every run (``run`` says which, from 0);
    ``summary`` one entry per phase and engine with ``{median, min, max, runs}`` per figure.
    """
    first = runs[0].as_dict()
    return {
        "config": first["config"],
        "machine": first["machine"],
        "version": first["version"],
        "started": first["started"],
        "repeat": len(runs),
        "summary": [row.as_dict() for row in summarise(runs)],
        "results": [r for run in runs for r in run.as_dict()["results"]],
    }


def _run(cfg: BenchConfig, live: bool, run: int) -> Result:
    if not live:
        return run_bench(cfg, listener=_progress, run=run)
    try:
        from ._live import run_live
    except ImportError:  # rich is an extra: fall back to progress lines
        print("(live display needs rich: pip install 'sluiceway[cli]')", file=sys.stderr)
        return run_bench(cfg, listener=_progress, run=run)
    return run_live(cfg, run)


def _progress(event: str, engine: object, spec: object, sink: object, phase: object) -> None:
    if event == "end" and isinstance(phase, PhaseResult):
        print(
            f"  {phase.phase:13s} {phase.engine:15s} {phase.throughput / 1e6:7.3f} M ev/s",
            file=sys.stderr,
            flush=True,
        )
