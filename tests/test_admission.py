"""Admission: capacity limits, the priority quota, bulk prefixes, put(), refusal after close."""

from __future__ import annotations

import threading

import pytest

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT, Recorder


def test_regular_capacity_is_exact_and_refusal_is_counted(recorder: Recorder) -> None:
    """An unstarted pipeline admits exactly ``capacity`` items, then refuses and counts."""
    p = sw.Pipeline(recorder, shards=4, capacity=100, batch_size=8)
    accepted = [p.submit(i) for i in range(130)]
    assert accepted == [True] * 100 + [False] * 30
    stats = p.stats()
    assert (stats.accepted, stats.refused, stats.in_flight) == (100, 30, 100)
    p.shutdown()
    assert sorted(recorder.items) == list(range(100))


def test_each_shard_is_bounded_and_unkeyed_items_spread_evenly(recorder: Recorder) -> None:
    """Shards get their share of capacity; unkeyed items spread evenly over them."""
    p = sw.Pipeline(recorder, shards=4, capacity=400, batch_size=10)
    for i in range(80):
        assert p.submit(i)
    depths = [s.depth for s in p.stats().shards]
    assert depths == [20, 20, 20, 20]
    assert [s.capacity for s in p.stats().shards] == [100] * 4
    p.shutdown()


def test_priority_quota_never_borrows_regular_capacity(recorder: Recorder) -> None:
    """The priority lane refuses past its quota even when regular capacity is free."""
    p = sw.Pipeline(recorder, capacity=100, priority_ratio=0.05, shards=2)
    results = [p.submit(i, priority=True) for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert p.submit("regular")  # the regular lane is untouched
    stats = p.stats()
    assert (stats.priority_accepted, stats.priority_refused) == (5, 3)
    p.shutdown()


def test_regular_items_cannot_use_priority_capacity(recorder: Recorder) -> None:
    """A full regular lane refuses even though the priority lane has room."""
    p = sw.Pipeline(recorder, capacity=10, shards=1)
    assert sum(p.submit(i) for i in range(20)) == 10
    assert p.submit("urgent", priority=True)
    p.shutdown()


def test_submit_many_accepts_the_longest_prefix(recorder: Recorder) -> None:
    """Bulk admission takes a prefix and reports its length; the rest is refused."""
    p = sw.Pipeline(recorder, capacity=50, shards=2, batch_size=4)
    assert p.submit_many(range(30)) == 30
    assert p.submit_many(iter(range(30, 60))) == 20
    assert p.submit_many([]) == 0
    assert p.stats().refused == 10
    p.shutdown()
    assert sorted(recorder.items) == list(range(50))


def test_submit_many_priority_prefix(recorder: Recorder) -> None:
    """Bulk priority admission is bounded by the quota too."""
    p = sw.Pipeline(
        recorder, capacity=100, priority_ratio=0.03, priority_handler=recorder.on_priority
    )
    assert p.submit_many(["a", "b", "c", "d"], priority=True) == 3
    p.shutdown()
    assert recorder.priority == ["a", "b", "c"]


def test_submit_after_shutdown_is_refused(recorder: Recorder) -> None:
    """Once shutdown has begun, every lane refuses and nothing more is processed."""
    p = sw.Pipeline(recorder)
    p.start()
    p.shutdown()
    assert not p.submit(1)
    assert not p.submit(2, priority=True)
    assert p.submit_many([3, 4]) == 0
    assert recorder.items == []


def test_put_waits_for_room_then_admits(recorder: Recorder) -> None:
    """put() blocks while the lane is full and admits once a batch finishes."""
    recorder.gate = threading.Event()
    p = sw.Pipeline(recorder, capacity=2, shards=1, batch_size=2, max_delay=0).start()
    assert p.submit(1)
    assert p.submit(2)
    assert recorder.entered.wait(WAIT)  # the batch [1, 2] is in the handler; lane full
    done = threading.Event()

    def producer() -> None:
        p.put(3, timeout=WAIT)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.05)  # still full: put is waiting, not admitted
    recorder.gate.set()
    assert done.wait(WAIT)
    t.join()
    p.shutdown()
    assert sorted(recorder.items) == [1, 2, 3]


def _put_in_thread(
    p: sw.Pipeline, item: object, timeout: float
) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``p.put(item, timeout=...)`` on a thread; the list collects what it raised."""
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            p.put(item, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    return t, errors


def test_put_times_out_with_full(recorder: Recorder, clock: FakeClock) -> None:
    """put() raises Full (a TimeoutError) when the fake clock passes its timeout."""
    p = sw.Pipeline(recorder, capacity=1, shards=1, clock=clock)
    assert p.submit(1)
    t, errors = _put_in_thread(p, 2, timeout=1.0)
    assert clock.wait_for_sleepers(1)
    clock.advance(1.0)
    t.join(WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], sw.Full)
    assert isinstance(errors[0], TimeoutError)
    p.shutdown()


def test_put_raises_closed_when_shutdown_begins(recorder: Recorder, clock: FakeClock) -> None:
    """A put() waiting for room raises Closed when shutdown starts."""
    p = sw.Pipeline(recorder, capacity=1, shards=1, clock=clock)
    assert p.submit(1)
    t, errors = _put_in_thread(p, 2, timeout=100.0)
    assert clock.wait_for_sleepers(1)
    p.shutdown()
    t.join(WAIT)
    assert [type(e) for e in errors] == [sw.Closed]
    with pytest.raises(sw.Closed):
        p.put(3)


def test_concurrent_producers_never_exceed_capacity(recorder: Recorder) -> None:
    """Several producer threads racing for the last tokens admit exactly ``capacity``."""
    p = sw.Pipeline(recorder, capacity=1000, shards=4, batch_size=16)
    counts = [0] * 4

    def producer(n: int) -> None:
        counts[n] = sum(p.submit((n, i)) for i in range(600))

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 1000
    stats = p.stats()
    assert (stats.accepted, stats.refused) == (1000, 1400)
    report = p.shutdown()
    assert report.processed == 1000
    assert len(recorder.items) == 1000
