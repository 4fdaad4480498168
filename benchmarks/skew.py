"""Skewed traffic: one hot key, one slow shard; work stealing on against off, in one run.

Run: ``.venv/bin/python benchmarks/skew.py [--seconds S]``. A keyed pipeline of 8 shards
(the io handler of ``docs/workload.md``) where one key carries 50% of the events and the
shard that key starts on calls its downstream 4x slower. With stealing, whole partitions
(queue included) move off the backlogged shard; the run checks that every key's events
were handled in submission order, and prints both throughputs and their ratio.
"""

from __future__ import annotations

import argparse
import threading
import time
from functools import partial
from typing import Any

import sluiceway as sw
from sluiceway.bench._workload import IO_BASE, IO_PER_EVENT, KEYS, PAYLOAD, retry_refused

HOT = "hot-key"
SLOW = 4.0


class Downstream:
    """The io handler, 4x slower on one shard; checks per-key order as it goes."""

    def __init__(self, slow_shard: int) -> None:
        """Remember which shard is slow."""
        self.slow_shard = slow_shard
        self.last: dict[str, int] = {}
        self.lock = threading.Lock()
        self.processed = 0
        self.out_of_order = 0

    def __call__(self, batch: list[Any]) -> None:
        """Sleep like a downstream write; record order violations."""
        factor = SLOW if sw.current_shard() == self.slow_shard else 1.0
        time.sleep(factor * (IO_BASE + IO_PER_EVENT * len(batch)))
        with self.lock:
            for event_id, key, _, _ in batch:
                if self.last.get(key, -1) > event_id:
                    self.out_of_order += 1
                self.last[key] = event_id
            self.processed += len(batch)


def key_of(event: Any) -> str:
    """The event's key."""
    return str(event[1])


def run(steal: bool, seconds: float) -> tuple[float, int, int, sw.Stats]:
    """One pipeline for ``seconds``: (events/s, out-of-order count, lost, stats)."""
    probe = sw.Pipeline(lambda b: None, shards=8, key=key_of)
    slow = probe._st.owner[hash(HOT) & (probe._st.cfg.partitions - 1)].index
    probe.shutdown()
    down = Downstream(slow)
    p = sw.Pipeline(down, shards=8, key=key_of, steal=steal, gc_threshold=10_000).start()
    submit = p.submit
    i = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for i in range(i, i + 256):  # noqa: B020 - resumes where it left off
            event = (i, HOT if i & 1 else KEYS[(i >> 1) & 1023], 0, PAYLOAD)
            retry_refused(partial(submit, event))
        i += 1
    elapsed = time.perf_counter() - start
    in_window = down.processed
    stats = p.stats()
    report = p.shutdown()
    return in_window / elapsed, down.out_of_order, report.lost, stats


def main() -> None:
    """Stealing off, then on; print throughputs, the ratio, and the order check."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    off, off_bad, off_lost, _ = run(False, args.seconds)
    on, on_bad, on_lost, stats = run(True, args.seconds)
    steals = sum(s.steals_out for s in stats.shards)
    moved = sum(s.moved_out for s in stats.shards)
    print(f"stealing off: {off / 1e3:8.1f} k ev/s  out-of-order {off_bad}  lost {off_lost}")
    print(f"stealing on:  {on / 1e3:8.1f} k ev/s  out-of-order {on_bad}  lost {on_lost}")
    print(f"ratio on/off {on / off:.2f}x   steals {steals}   items moved {moved}")
    raise SystemExit(0 if on_bad == off_bad == 0 and on_lost == off_lost == 0 else 1)


if __name__ == "__main__":
    main()
