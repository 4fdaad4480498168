"""Failure handling under load: a flaky downstream with poison events vs a healthy one.

Run: ``.venv/bin/python benchmarks/failures.py [--seconds S]``. In one run, the same
producer drives two pipelines with the cpu handler: one healthy, one whose downstream fails
20% of calls at random and where 1 event in 10,000 is poison (fails every batch it is in).
It prints both throughputs, their ratio, and checks that exactly the poison events were
dead-lettered and nothing was lost.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from functools import partial
from typing import Any

import sluiceway as sw
from sluiceway.bench._workload import KEYS, PAYLOAD, retry_refused

POISON_EVERY = 10_000
FAIL_RATE = 0.2


class Downstream:
    """The cpu handler, optionally failing at random and on poison events."""

    def __init__(self, flaky: bool, seed: int = 1) -> None:
        """Healthy, or flaky with a fixed seed."""
        self.flaky = flaky
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.processed = 0

    def __call__(self, batch: list[Any]) -> None:
        """Sum payload lengths; fail 20% of calls, and on any poison event."""
        # Both runs do the same work per call; only the flaky one acts on what it finds.
        unlucky = self.rng.random() < FAIL_RATE
        if self.flaky and unlucky:
            raise ConnectionError("transient")
        for event in batch:
            if event[0] % POISON_EVERY == POISON_EVERY - 1 and self.flaky:
                raise ValueError(f"poison {event[0]}")
        total = 0
        for event in batch:
            total += len(event[3])
        with self.lock:
            self.processed += len(batch)


def run(flaky: bool, seconds: float) -> tuple[float, sw.DrainReport, list[Any], int]:
    """Drive one pipeline for ``seconds``; return throughput, report, dead items, produced."""
    down = Downstream(flaky)
    p = sw.Pipeline(
        down,
        retry=sw.Retry(attempts=5, backoff=0.001, max_backoff=0.05),
        breaker=sw.Breaker(failures=20, cooldown=0.05),
        gc_threshold=10_000,
    ).start()
    submit = p.submit
    now_ns = time.monotonic_ns
    i = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for i in range(i, i + 512):  # noqa: B020 - resumes where it left off
            retry_refused(partial(submit, (i, KEYS[i & 1023], now_ns(), PAYLOAD)))
        i += 1
    elapsed = time.perf_counter() - start
    in_window = down.processed
    report = p.shutdown()
    dead = [d.item[0] for d in p.dead_letters.records()]
    return in_window / elapsed, report, dead, i


def main() -> None:
    """Run healthy, then flaky, and print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    healthy, h_report, _, _ = run(False, args.seconds)
    flaky, f_report, dead, produced = run(True, args.seconds)
    poison = {j for j in range(produced) if j % POISON_EVERY == POISON_EVERY - 1}
    print(f"healthy: {healthy / 1e6:.3f} M ev/s   lost {h_report.lost}")
    print(
        f"flaky:   {flaky / 1e6:.3f} M ev/s   lost {f_report.lost}   ratio {healthy / flaky:.2f}x"
    )
    print(
        f"dead-lettered {len(dead)}, all poison: {set(dead) <= poison}, "
        f"poison produced {len(poison)}"
    )
    ok = h_report.lost == 0 and f_report.lost == 0 and set(dead) == poison & set(dead)
    raise SystemExit(0 if ok and set(dead) == poison else 1)


if __name__ == "__main__":
    main()
