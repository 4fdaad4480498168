"""Where per-item time goes: the floors behind the saturate-cpu ratios (docs/performance.md).

Run: ``.venv/bin/python benchmarks/floor.py [--repeat N]``. Single-threaded measurements,
each the median of ``N`` runs, printed as nanoseconds an event and as the ceiling's share:

- ``ceiling``: the bench's no-queueing loop (build the event, handle it in batches of 64);
- ``queue depth``: the same loop with a FIFO of Q events in between (Q = 0..64k), in one
  thread: what holding events costs without any thread hand-off;
- ``producer alone``: ``submit`` and ``submit_many(1,000)`` into a pipeline that is not
  started, so no consumer competes: an upper bound on what the producer side allows;
- ``consumer per batch``: a started pipeline draining 65,536 queued events (fixed batch);
- ``priority lane``: what the lane costs per priority item beyond its handler.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import sluiceway as sw
from sluiceway.bench._workload import KEYS, PAYLOAD, Sink

N = 60_000


def _ns(start: float, n: int) -> float:
    return (time.perf_counter() - start) / n * 1e9


def ceiling() -> float:
    """The bench's ceiling loop: ns an event."""
    sink = Sink("cpu")
    now_ns, keys, payload = time.monotonic_ns, KEYS, PAYLOAD
    batch: list[Any] = []
    append, handle, urgent = batch.append, sink.batch, sink.priority
    t = time.perf_counter()
    for i in range(N):
        event = (i, keys[i & 1023], now_ns(), payload)
        if i % 100 == 0:
            urgent(event)
        else:
            append(event)
            if len(batch) == 64:
                handle(batch[:])
                batch.clear()
    return _ns(t, N)


def queue_depth(depth: int) -> float:
    """The ceiling's work with ``depth`` events held in a FIFO, one thread: ns an event."""
    sink = Sink("cpu")
    now_ns, keys, payload = time.monotonic_ns, KEYS, PAYLOAD
    fifo: deque[Any] = deque()
    put, get, handle = fifo.append, fifo.popleft, sink.batch
    t = time.perf_counter()
    for i in range(N):
        put((i, keys[i & 1023], now_ns(), payload))
        if len(fifo) >= depth + 64:
            handle([get() for _ in range(64)])
    return _ns(t, N)


def producer_alone() -> float:
    """Per-item ``submit`` into a pipeline not started (no consumer): ns an event."""
    sink = Sink("cpu")
    p = sw.Pipeline(sink.batch, capacity=2 * N, priority_handler=sink.priority)
    submit, now_ns, keys, payload = p.submit, time.monotonic_ns, KEYS, PAYLOAD
    t = time.perf_counter()
    for i in range(N):
        submit((i, keys[i & 1023], now_ns(), payload), i % 100 == 0)
    took = _ns(t, N)
    p.shutdown()
    return took


def bulk_producer_alone() -> float:
    """``submit_many`` of 1,000 into a pipeline not started: ns an event."""
    sink = Sink("cpu")
    p = sw.Pipeline(sink.batch, capacity=2 * N)
    many, now_ns, keys, payload = p.submit_many, time.monotonic_ns, KEYS, PAYLOAD
    t = time.perf_counter()
    for start in range(0, N, 1000):
        many([(i, keys[i & 1023], now_ns(), payload) for i in range(start, start + 1000)])
    took = _ns(t, N)
    p.shutdown()
    return took


def consumer_per_batch(size: int) -> float:
    """A started pipeline draining 65,536 queued events in batches of ``size``: us a batch."""
    n = 65_536
    sink = Sink("cpu")
    p = sw.Pipeline(sink.batch, batch_size=size, adaptive=False, capacity=n, steal=False)
    for i in range(n):
        p.submit((i, KEYS[i & 1023], 0, PAYLOAD))
    t = time.perf_counter()
    p.start()
    p.wait_idle()
    took = (time.perf_counter() - t) / (n / size) * 1e6
    p.shutdown()
    return took


def priority_lane() -> float:
    """The lane's cost per priority item beyond its handler: us an item."""
    n = 5000
    sink = Sink("cpu")
    p = sw.Pipeline(sink.batch, priority_handler=sink.priority, capacity=65_536)
    for i in range(n):
        p.submit((i, KEYS[i & 1023], 0, PAYLOAD), priority=True)
    t = time.perf_counter()
    p._lane.serve()  # in this thread: the lane's work alone, no hand-off
    served = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        sink.priority((i, KEYS[i & 1023], 0, PAYLOAD))
    alone = time.perf_counter() - t
    p.shutdown()
    return (served - alone) / n * 1e6


def main() -> None:
    """Print every floor, each the median of ``--repeat`` runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default: 5)")
    repeat = parser.parse_args().repeat

    def median(f: Callable[[], float]) -> float:
        return statistics.median(f() for _ in range(repeat))

    base = median(ceiling)
    print(f"ceiling                        {base:6.0f} ns an event")
    for depth in (0, 1_000, 4_000, 16_000, 64_000):
        ns = median(partial(queue_depth, depth))
        print(f"queue depth {depth:>6,} (one thread) {ns:6.0f} ns an event  {base / ns:.2f}x")
    for name, f in (("submit", producer_alone), ("submit_many", bulk_producer_alone)):
        ns = median(f)
        print(f"producer alone, {name:<12}   {ns:6.0f} ns an event  {base / ns:.2f}x")
    for size in (64, 256):
        us = median(partial(consumer_per_batch, size))
        each = us / size * 1e3
        print(f"consumer, batch {size:<3}            {us:6.1f} us a batch ({each:.0f} ns an event)")
    print(f"priority lane beyond handler   {median(priority_lane):6.2f} us an item")


if __name__ == "__main__":
    main()
