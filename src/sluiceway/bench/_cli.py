"""``sluiceway bench``: argument handling, the results table, JSON, the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._config import PHASES, QUICK_SCALE, BenchConfig
from ._runner import PhaseResult, Result, run_bench
from ._table import render_text

__all__ = ["bench_command", "config_from_args"]


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
    """Run the bench; exit 1 if any engine lost an accepted event."""
    cfg = config_from_args(args)
    result = _run(cfg, live=not args.no_live and sys.stdout.isatty())
    print(render_text(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2))
    if args.report:
        from ._report import write_report

        write_report(result, Path(args.report))
    lost = [r for r in result.results if r.lost]
    if lost:
        for r in lost:
            print(f"LOST: {r.engine} lost {r.lost} accepted events in {r.phase}", file=sys.stderr)
        return 1
    return 0


def _run(cfg: BenchConfig, live: bool) -> Result:
    if not live:
        return run_bench(cfg, listener=_progress)
    try:
        from ._live import run_live
    except ImportError:  # rich is an extra: fall back to progress lines
        print("(live display needs rich: pip install 'sluiceway[cli]')", file=sys.stderr)
        return run_bench(cfg, listener=_progress)
    return run_live(cfg)


def _progress(event: str, engine: object, spec: object, sink: object, phase: object) -> None:
    if event == "end" and isinstance(phase, PhaseResult):
        print(
            f"  {phase.phase:13s} {phase.engine:15s} {phase.throughput / 1e6:7.3f} M ev/s",
            file=sys.stderr,
            flush=True,
        )
