"""Fixed-bucket histograms the engine fills in batches and the Prometheus collector reads."""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS", "Histogram", "HistogramSnapshot"]

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative-ready counts: ``counts[i]`` observations <= ``bounds[i]``, last is +Inf."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket (not cumulative); one more than bounds (+Inf)
    total: float
    count: int


class Histogram:
    """A histogram of seconds; ``observe(value, n)`` records ``n`` equal observations."""

    __slots__ = ("_counts", "_lock", "_sum", "bounds")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, n: int = 1) -> None:
        """Record ``n`` observations of ``value`` seconds."""
        i = bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += n
            self._sum += value * n

    def observe_many(self, values: list[float]) -> None:
        """Record each of ``values`` (seconds) once, under one lock."""
        bounds = self.bounds
        slots = [bisect_left(bounds, v) for v in values]
        with self._lock:
            counts = self._counts
            for i in slots:
                counts[i] += 1
            self._sum += sum(values)

    def snapshot(self) -> HistogramSnapshot:
        """A consistent copy."""
        with self._lock:
            counts = tuple(self._counts)
            total = self._sum
        return HistogramSnapshot(self.bounds, counts, total, sum(counts))
