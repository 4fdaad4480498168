"""Load balance: adaptive batch sizes and work stealing that keeps per-key order."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT


class ShardGate:
    """A handler that blocks calls for one shard until released, recording the rest."""

    def __init__(self, blocked_shard: int) -> None:
        """Block ``blocked_shard`` until ``release``."""
        self.blocked_shard = blocked_shard
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.done: list[Any] = []
        self.by_shard: dict[int, list[Any]] = defaultdict(list)
        self.cond = threading.Condition()

    def __call__(self, batch: list[Any]) -> None:
        """Wait at the gate when called for the blocked shard."""
        shard = sw.current_shard()
        assert shard is not None
        if shard == self.blocked_shard and not self.gate.is_set():
            self.entered.set()
            self.gate.wait(WAIT)
        with self.cond:
            self.done.extend(batch)
            self.by_shard[shard].extend(batch)
            self.cond.notify_all()

    def wait_done(self, n: int) -> bool:
        """Block until ``n`` items were handled."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.done) >= n, WAIT)


def _backlog(clock: FakeClock, steal: bool) -> tuple[sw.Pipeline, ShardGate]:
    h = ShardGate(blocked_shard=0)
    p = sw.Pipeline(
        h, shards=2, batch_size=4, capacity=400, clock=clock, steal=steal, adaptive=False
    ).start()
    p.submit_many(range(8))  # the first batch of each shard; shard 0's blocks in the handler
    assert h.entered.wait(WAIT)
    p.submit_many(range(8, 200))  # a backlog builds up behind shard 0
    assert h.wait_done(4 + 96)  # shard 1 handled its share
    for _ in range(3):  # balancing steps happen as the clock moves
        clock.advance(0.01)
        p.flush()
    return p, h


def test_backlog_of_a_busy_shard_moves_to_an_idle_one(clock: FakeClock) -> None:
    """Filled batches queued behind a stuck shard are handed to the idle shard."""
    p, h = _backlog(clock, steal=True)
    h.gate.set()
    assert h.wait_done(200)
    p.shutdown()
    stats = p.stats()
    assert stats.shards[0].steals_out >= 1
    assert stats.shards[1].moved_in == stats.shards[0].moved_out > 0
    assert len(h.by_shard[1]) > 100  # more than its own half
    assert sorted(h.done) == list(range(200))


def test_stealing_switched_off_moves_nothing(clock: FakeClock) -> None:
    """With steal=False the stuck shard keeps its backlog."""
    p, h = _backlog(clock, steal=False)
    h.gate.set()
    assert h.wait_done(200)
    p.shutdown()
    stats = p.stats()
    assert all(s.steals_out == s.moved_out == s.moved_in == 0 for s in stats.shards)
    assert len(h.by_shard[1]) == 100


def test_stealing_never_reorders_a_key() -> None:
    """Random keys, random handler delays, steals every 200 us: per-key order holds.

    The shard that handles the first batch is made slow, so a backlog builds up on it while
    the others idle, and the balancer moves its partitions. Steals are counted before
    shutdown (draining stops them) and summed over the examples: the test fails if no
    example stole anything, so it cannot pass without exercising the mechanism.
    """
    steals: list[int] = []

    @settings(max_examples=12, deadline=None)
    @given(keys=st.lists(st.integers(0, 12), min_size=50, max_size=400), seed=st.integers(0, 99))
    def run(keys: list[int], seed: int) -> None:
        rng = random.Random(seed)
        seen: dict[int, list[int]] = defaultdict(list)
        slow: list[int] = []
        lock = threading.Lock()

        def handler(batch: list[tuple[int, int]]) -> None:
            shard = sw.current_shard()
            assert shard is not None
            with lock:
                if not slow:
                    slow.append(shard)
            time.sleep(rng.random() * 0.0005 + (0.002 if shard == slow[0] else 0.0))
            with lock:
                for k, i in batch:
                    seen[k].append(i)

        # Every key once first, so the slow shard owns several non-empty partitions.
        events = [(k, i) for i, k in enumerate(list(range(13)) * 4 + keys)]
        p = sw.Pipeline(
            handler, shards=4, batch_size=4, key=lambda e: e[0], balance_interval=0.0002
        ).start()
        try:
            for event in events:
                while not p.submit(event):
                    time.sleep(0.0001)
            p.flush()
            assert p.wait_idle(WAIT)
            steals.append(sum(s.steals_out for s in p.stats().shards))
        finally:
            p.shutdown()
        for k, order in seen.items():
            assert order == sorted(order), k
        assert sum(map(len, seen.values())) == len(events)

    run()
    assert sum(steals) > 0, f"no example stole anything: {steals}"


def test_keyed_partitions_move_with_their_queue(clock: FakeClock) -> None:
    """A keyed shard stuck in its handler gives whole partitions; order is kept."""
    h = ShardGate(blocked_shard=0)
    p = sw.Pipeline(
        h, shards=2, batch_size=2, capacity=2000, clock=clock, key=lambda e: e[0], adaptive=False
    ).start()
    owner = p._st.owner
    mask = p._st.cfg.partitions - 1
    keys0 = [k for k in range(200) if owner[hash(k) & mask].index == 0][:6]
    events = [(k, i) for i in range(30) for k in keys0]
    p.submit_many(events[:2])
    assert h.entered.wait(WAIT)
    p.submit_many(events[2:])
    for _ in range(3):
        clock.advance(0.01)
    h.gate.set()
    assert h.wait_done(len(events))
    p.shutdown()
    stats = p.stats()
    assert stats.shards[0].steals_out >= 1
    assert h.by_shard[1]  # shard 1 handled some of shard 0's keys
    per_key: dict[int, list[int]] = defaultdict(list)
    for k, i in h.done:
        per_key[k].append(i)
    assert all(v == sorted(v) for v in per_key.values())


def test_batch_size_grows_under_deep_queues_and_shrinks_when_quiet(clock: FakeClock) -> None:
    """Above 80% fill the batch size doubles (to max_batch); quiet, it halves (to min)."""
    done = threading.Event()
    p = sw.Pipeline(
        lambda b: None,
        shards=1,
        batch_size=32,
        min_batch=16,
        max_batch=128,
        capacity=1000,
        clock=clock,
    )
    balancer = p._balancer
    p.submit_many(range(900))
    sizes = []
    for _ in range(3):
        balancer.adapt()
        sizes.append(p.stats().batch_size)
    assert sizes == [64, 128, 128]
    p.start()
    p.flush()  # the last partial batch; the fake clock does not move here
    assert p.wait_idle(WAIT)
    for _ in range(4):  # single items going out by age: the queue is quiet
        p.submit("x")
        assert clock.wait_for_sleepers(1)
        clock.advance(0.005)
        assert p.wait_idle(WAIT)
        balancer.adapt()
    assert p.stats().batch_size == 16
    assert p.stats().batch_size_changes >= 4
    done.set()
    p.shutdown()


def test_adaptive_off_keeps_the_batch_size(clock: FakeClock) -> None:
    """adaptive=False: the balancing step never changes the size."""
    p = sw.Pipeline(
        lambda b: None, shards=1, batch_size=32, capacity=100, clock=clock, adaptive=False
    )
    p.submit_many(range(95))
    p.start()
    clock.advance(1.0)
    assert p.wait_idle(WAIT)
    assert p.stats().batch_size == 32
    p.shutdown()


def test_batch_size_bounds_are_checked() -> None:
    """batch_size must lie within min_batch..max_batch."""
    with pytest.raises(sw.ConfigError, match="batch_size"):
        sw.Pipeline(lambda b: None, batch_size=8, min_batch=16)
