"""stats(): a frozen snapshot whose counts add up."""

from __future__ import annotations

import dataclasses

import pytest

import sluiceway as sw

from .conftest import Recorder


def test_stats_add_up_after_known_traffic(recorder: Recorder) -> None:
    """Accepted, refused, processed, per-shard and flush counts match the traffic."""
    p = sw.Pipeline(
        recorder,
        shards=2,
        capacity=100,
        batch_size=10,
        priority_handler=recorder.on_priority,
        adaptive=False,
    )
    p.submit_many(range(105))
    p.submit("p", priority=True)
    before = p.stats()
    assert (before.accepted, before.refused, before.in_flight) == (101, 5, 101)
    assert before.priority_depth == 1
    p.shutdown()
    after = p.stats()
    assert (after.processed, after.dead_lettered, after.in_flight) == (101, 0, 0)
    assert sum(s.processed for s in after.shards) == 100
    assert sum(s.batches for s in after.shards) == sum(after.flushes.values())
    assert after.closed
    assert after.batch_size == 10


def test_stats_are_frozen(recorder: Recorder) -> None:
    """The snapshot cannot be modified."""
    p = sw.Pipeline(recorder)
    stats = p.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.accepted = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.flushes["size"] = 3  # type: ignore[index]
    p.shutdown()


def test_no_latency_before_any_priority_item(recorder: Recorder) -> None:
    """Priority percentiles are None until a priority item was handled."""
    p = sw.Pipeline(recorder)
    assert p.stats().priority_latency_p99 is None
    p.shutdown()


def test_pipeline_repr_says_its_shape_and_state() -> None:
    """``repr(p)`` names the state, shape and items in flight (no handler internals)."""
    p = sw.Pipeline(lambda b: None, shards=2, capacity=64, batch_size=8)
    assert repr(p).startswith("<Pipeline new shards=2 capacity=64 batch_size=8 keyed=False")
    p.submit(1)
    assert "in_flight=1" in repr(p)
    p.start()
    assert "running" in repr(p)
    p.shutdown()
    assert repr(p).startswith("<Pipeline closed")


def test_tracked_items_are_counted_once_in_shard_depth() -> None:
    """Fault: unkeyed tracked items were counted twice (their slot markers and their chunk).

    Five tracked items on a capacity-8 shard read as a depth of 10, above the capacity.
    """
    p = sw.Pipeline(lambda b: None, shards=1, batch_size=1, capacity=8)
    p.submit_tracked([0, 0, 0, 0, 0])
    assert sum(s.depth for s in p.stats().shards) == 5
    assert p.shutdown().processed == 5
