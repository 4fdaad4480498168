"""A background sampler: the time series behind the live view and the report.

Every ``interval`` seconds it reads the sink's counters (new entries only, so each sample is
O(what happened since the last)) and the engine's queue depth and batch size.
"""

from __future__ import annotations

import os
import threading
import time

from ._engines import Engine
from ._workload import Sink

__all__ = ["Sampler", "rss_mb"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident memory of the process in MiB (Linux /proc; 0.0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class Sampler:
    """Samples one engine during one phase."""

    def __init__(self, engine: Engine, sink: Sink, interval: float = 0.1) -> None:
        self.engine = engine
        self.sink = sink
        self.interval = interval
        self.series: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._seen_batches = 0
        self._seen_latencies = 0
        self._processed = 0
        self.start_time = time.perf_counter()

    def start(self) -> None:
        """Begin sampling."""
        self.start_time = time.perf_counter()
        self._thread.start()

    def stop(self) -> list[dict[str, float]]:
        """Stop and return the series."""
        self._stop.set()
        self._thread.join()
        return self.series

    def latest(self) -> dict[str, float]:
        """The most recent sample (empty before the first)."""
        return self.series[-1] if self.series else {}

    def _run(self) -> None:
        last = self.start_time
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            done = self.sink.done
            n = len(done)
            added = sum(done[self._seen_batches : n])
            self._seen_batches = n
            self._processed += added
            lat = self.sink.latencies
            m = len(lat)
            window = sorted(lat[self._seen_latencies : m])
            self._seen_latencies = m
            p99 = window[min(len(window) - 1, int(0.99 * len(window)))] / 1e6 if window else 0.0
            try:
                depth = float(self.engine.depth())
                batch = self.engine.batch_size()
            except Exception:  # noqa: BLE001 - the engine may be between setup and teardown
                depth, batch = 0.0, 0.0
            self.series.append(
                {
                    "rss_mb": rss_mb(),
                    "t": now - self.start_time,
                    "throughput": added / (now - last) if now > last else 0.0,
                    "processed": float(self._processed),
                    "depth": depth,
                    "batch_size": batch,
                    "priority_p99_ms": p99,
                }
            )
            last = now
