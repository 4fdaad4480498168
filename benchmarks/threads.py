"""Who spends the time in saturate-cpu: CPU time per thread, the GC's share, thread switches.

Run: ``.venv/bin/python benchmarks/threads.py [--switch-interval auto|none|SECONDS]
[--seconds S]``. One pipeline with the workload's defaults and the bench's producer loop
(``docs/workload.md``, saturate-cpu); prints the throughput, each thread's CPU time per
event (``/proc/self/task/*/stat``, Linux), the share of wall time in cyclic-GC collections
(``gc.callbacks``) and the context switches a second (``getrusage``).
"""

from __future__ import annotations

import argparse
import gc
import resource
import threading
import time
from typing import Any

import sluiceway as sw
from sluiceway.bench._workload import Sink, produce

TICK = 0.01  # seconds a /proc clock tick (USER_HZ 100)


def cpu_ticks() -> dict[str, int]:
    """User + system clock ticks of every live thread, by thread name."""
    out: dict[str, int] = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[t.name] = int(fields[11]) + int(fields[12])
    return out


class GcTimer:
    """Wall time spent in collections, and how many of each generation."""

    def __init__(self) -> None:
        """Install the callback."""
        self.spent = 0.0
        self.counts = [0, 0, 0]
        self._start = 0.0
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.spent += time.perf_counter() - self._start
            self.counts[info["generation"]] += 1


def main() -> None:
    """Run saturate-cpu once and print where the time went."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switch-interval", default="auto", help="auto, none or seconds")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    mode = args.switch_interval.lower()
    interval: Any = "auto" if mode == "auto" else None if mode == "none" else float(mode)
    sink = Sink("cpu")
    p = sw.Pipeline(sink.batch, priority_handler=sink.priority, switch_interval=interval)
    p.start()
    timer = GcTimer()
    before, usage = cpu_ticks(), resource.getrusage(resource.RUSAGE_SELF)
    timer.spent, timer.counts = 0.0, [0, 0, 0]
    produced = produce(p.submit, args.seconds, None)
    after, usage2 = cpu_ticks(), resource.getrusage(resource.RUSAGE_SELF)
    processed = sink.processed()
    p.shutdown()
    wall = produced.seconds
    print(f"switch_interval={interval!r}: {processed / wall / 1e6:.2f} M events/s")
    for name, ticks in sorted(after.items(), key=lambda kv: -(kv[1] - before.get(kv[0], 0))):
        spent = (ticks - before.get(name, 0)) * TICK
        if spent > 0:
            share = spent / wall
            print(f"  {name:<22} {share:5.0%} of wall, {spent / processed * 1e9:4.0f} ns an event")
    print(f"  cyclic GC              {timer.spent / wall:5.1%} of wall, collections {timer.counts}")
    switches = (usage2.ru_nvcsw - usage.ru_nvcsw + usage2.ru_nivcsw - usage.ru_nivcsw) / wall
    print(f"  context switches       {switches:,.0f} a second")


if __name__ == "__main__":
    main()
