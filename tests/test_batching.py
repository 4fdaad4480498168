"""Batch triggers on the fake clock: size, age (max_delay), manual flush; priority bypass."""

from __future__ import annotations

from typing import Any

import pytest

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT, Recorder


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_full_batch_goes_at_once(recorder: Recorder, clock: FakeClock, keyed: bool) -> None:
    """``batch_size`` items on one shard are handled without any time passing."""
    key = (lambda x: "k") if keyed else None
    with sw.Pipeline(recorder, shards=1, batch_size=4, max_delay=10.0, clock=clock, key=key) as p:
        for i in range(4):
            assert p.submit(i)
        assert recorder.wait_items(4)
        assert recorder.batches == [[0, 1, 2, 3]]
        assert p.stats().flushes["size"] == 1
        assert clock.now() == 0.0


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_quiet_shard_flushes_after_max_delay(
    recorder: Recorder, clock: FakeClock, keyed: bool
) -> None:
    """A lone item waits exactly ``max_delay`` of clock time, not less, not for ever."""
    key = (lambda x: x) if keyed else None
    with sw.Pipeline(recorder, shards=2, batch_size=64, max_delay=0.005, clock=clock, key=key) as p:
        assert p.submit("lonely")
        assert clock.wait_for_sleepers(1)  # a worker sleeps until the item is due
        clock.advance(0.004)
        assert clock.wait_for_sleepers(1)
        assert recorder.items == []
        clock.advance(0.001)
        assert recorder.wait_items(1)
        assert recorder.batches == [["lonely"]]
        assert p.stats().flushes["time"] == 1


def test_flush_hands_over_partial_batches_now(recorder: Recorder, clock: FakeClock) -> None:
    """flush() sends partial batches without waiting for the clock."""
    with sw.Pipeline(recorder, shards=2, batch_size=64, max_delay=60.0, clock=clock) as p:
        for i in range(5):
            p.submit(i)
        p.flush()
        assert recorder.wait_items(5)
        assert sorted(recorder.items) == [0, 1, 2, 3, 4]
        assert p.stats().flushes["manual"] >= 1
        assert clock.now() == 0.0


def test_partial_batches_are_sized_by_what_arrived(recorder: Recorder, clock: FakeClock) -> None:
    """Ten items with batch size 4 on one shard: two full batches, then 2 after the delay."""
    with sw.Pipeline(recorder, shards=1, batch_size=4, max_delay=1.0, clock=clock) as p:
        assert p.submit_many(range(10)) == 10
        assert recorder.wait_items(8)
        assert clock.wait_for_sleepers(1)
        clock.advance(1.0)
        assert recorder.wait_items(10)
        assert [len(b) for b in recorder.batches] == [4, 4, 2]


def test_priority_items_skip_batching(recorder: Recorder, clock: FakeClock) -> None:
    """A priority item is handled alone, at once, by the priority handler."""
    with sw.Pipeline(
        recorder, batch_size=64, max_delay=60.0, clock=clock, priority_handler=recorder.on_priority
    ) as p:
        p.submit("regular")
        p.submit("urgent", priority=True)
        assert recorder.wait_priority(1)
        assert recorder.priority == ["urgent"]
        assert recorder.items == []  # the regular item still waits for its batch


def test_priority_defaults_to_handler_with_one_item(recorder: Recorder) -> None:
    """Without a priority_handler, the batch handler is called with ``[item]``."""
    with sw.Pipeline(recorder) as p:
        p.submit("urgent", priority=True)
        assert recorder.wait_items(1)
    assert recorder.batches == [["urgent"]]


def test_priority_does_not_wait_behind_a_slow_regular_batch(recorder: Recorder) -> None:
    """While a regular batch is stuck in its handler, priority items are still served."""
    import threading

    recorder.gate = threading.Event()
    with sw.Pipeline(recorder, shards=1, batch_size=1, priority_handler=recorder.on_priority) as p:
        p.submit("slow")
        assert recorder.entered.wait(WAIT)
        p.submit("urgent", priority=True)
        assert recorder.wait_priority(1)
        recorder.gate.set()


def test_priority_latency_is_measured_on_the_clock(recorder: Recorder, clock: FakeClock) -> None:
    """stats() reports priority latency (submit to handler start) from the pipeline clock."""
    p = sw.Pipeline(recorder, clock=clock, priority_handler=recorder.on_priority)
    p.submit("a", priority=True)
    clock.advance(0.25)
    p.start()
    assert recorder.wait_priority(1)
    stats = p.stats()
    assert stats.priority_latency_p50 == pytest.approx(0.25)
    assert stats.priority_latency_p99 == pytest.approx(0.25)
    p.shutdown()


def test_a_chunk_queued_while_a_keyed_cut_looks_is_never_handed_out_as_an_item() -> None:
    """Fault (chaos, Python 3.13, short switch interval): a Chunk reached the handler.

    The cut of a shard holding several partitions checked the chunk counts first and read
    the queue lengths after, so a tracked submission queued in between was popped as one
    plain item: its items lost, its completion never settled, the pipeline hung.
    """
    from sluiceway._core._batch import cut
    from sluiceway._core._completion import Completion
    from sluiceway._core._shard import Chunk, Part, Shard

    shard = Shard(0)
    first = Part(0)
    first.queue.extend(["a", "b"])

    slot: Any = vars(Part)["chunks"]  # the slot's own descriptor

    class Racing(Part):
        """Reading its count lets a producer queue a chunk on ``first`` (count, then append)."""

        __slots__ = ()

        @property
        def chunks(self) -> int:
            value: int = slot.__get__(self)
            if not first.queue or first.queue[-1] != "racing":
                first.add_chunk(Chunk(["c", "d"], Completion()))
                first.queue.append("racing")
            return value

        @chunks.setter
        def chunks(self, value: int) -> None:
            slot.__set__(self, value)

    second = Racing(1)
    second.queue.append("e")
    shard.parts = [first, second]
    items, _ = cut(shard, 100)
    assert all(isinstance(x, str) for x in items), items  # no Chunk object among the items
    assert sorted(items) == ["a", "b", "e"]
    rest, marks = cut(shard, 100)  # the chunk is cut as what it is, with its completion
    assert rest == ["c", "d", "racing"]
    assert marks is not None
