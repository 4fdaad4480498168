"""Adaptive batch sizing against a fixed batch of 64, on the saturate-io phase, one run.

Run: ``.venv/bin/python benchmarks/adaptive.py [--seconds S]``. Prints both throughputs,
their ratio, and each against the io ceiling of ``docs/workload.md``.
"""

from __future__ import annotations

import argparse

import sluiceway as sw
from sluiceway.bench._runner import io_ceiling
from sluiceway.bench._workload import Sink, produce


def run(adaptive: bool, seconds: float) -> tuple[float, int]:
    """saturate-io for ``seconds``; return (events/s, lost)."""
    sink = Sink("io")
    p = sw.Pipeline(
        sink.batch,
        priority_handler=sink.priority,
        adaptive=adaptive,
        switch_interval=0.0005,
        gc_threshold=10_000,
    ).start()
    produced = produce(p.submit, seconds, None)
    rate = sink.processed() / produced.seconds
    return rate, p.shutdown().lost


def main() -> None:
    """Fixed 64, then adaptive; print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    ceiling = io_ceiling(8, 256)
    fixed, lost_f = run(False, args.seconds)
    adaptive, lost_a = run(True, args.seconds)
    for label, rate, lost in (("fixed 64", fixed, lost_f), ("adaptive", adaptive, lost_a)):
        print(f"{label:9s} {rate / 1e6:.3f} M ev/s  {rate / ceiling:.2f}x io ceiling  lost {lost}")
    print(f"adaptive / fixed: {adaptive / fixed:.2f}x")
    raise SystemExit(0 if lost_f == lost_a == 0 else 1)


if __name__ == "__main__":
    main()
