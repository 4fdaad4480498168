"""Circuit breakers on the fake clock: open, half-open, closed, rerouting, all-open refusal."""

from __future__ import annotations

import threading
from typing import Any

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT


class Switchable:
    """A handler that fails while ``down`` or for batches with a bad item."""

    def __init__(self) -> None:
        """Start healthy."""
        self.down = False
        self.bad: set[Any] = set()
        self.ok: list[Any] = []
        self.calls = 0
        self.cond = threading.Condition()

    def __call__(self, batch: list[Any]) -> None:
        """Fail or record."""
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
        if self.down or self.bad & set(batch):
            raise ConnectionError("down")
        with self.cond:
            self.ok.extend(batch)
            self.cond.notify_all()

    def wait(self, predicate: Any) -> bool:
        """Block until ``predicate()`` holds."""
        with self.cond:
            return bool(self.cond.wait_for(predicate, WAIT))


def _states(p: sw.Pipeline) -> list[str]:
    return [s.breaker for s in p.stats().shards]


def test_closed_open_half_open_closed_and_open_again(clock: FakeClock) -> None:
    """Two failures open it; after the cool-down a failing probe re-opens, a good one closes."""
    h = Switchable()
    h.down = True
    retry = sw.Retry(attempts=100, backoff=0.0, jitter=False, isolate=False)
    breaker = sw.Breaker(failures=2, cooldown=1.0)
    with sw.Pipeline(h, shards=1, batch_size=1, clock=clock, retry=retry, breaker=breaker) as p:
        assert _states(p) == ["closed"]
        p.submit("x")
        assert h.wait(lambda: h.calls == 2)
        assert clock.wait_for_sleepers(1)
        assert _states(p) == ["open"]
        clock.advance(0.5)
        assert clock.wait_for_sleepers(1)
        assert h.calls == 2  # open: no call during the cool-down
        clock.advance(0.5)
        assert h.wait(lambda: h.calls == 3)  # the half-open probe fails...
        assert clock.wait_for_sleepers(1)
        assert _states(p) == ["open"]  # ...and opens it again
        h.down = False
        clock.advance(1.0)
        assert h.wait(lambda: h.ok == ["x"])  # the next probe succeeds
        assert p.wait_idle(WAIT)
        assert _states(p) == ["closed"]


def test_every_breaker_open_refuses_admission(clock: FakeClock) -> None:
    """With every shard's breaker open, submit refuses; after the cool-down it admits again."""
    h = Switchable()
    h.down = True
    retry = sw.Retry(attempts=100, backoff=0.0, jitter=False, isolate=False)
    breaker = sw.Breaker(failures=1, cooldown=1.0)
    with sw.Pipeline(h, shards=1, batch_size=1, clock=clock, retry=retry, breaker=breaker) as p:
        assert p.submit("first")
        assert h.wait(lambda: h.calls == 1)
        assert clock.wait_for_sleepers(1)
        assert not p.submit("refused")
        assert p.submit_many(["a", "b"]) == 0
        assert p.stats().refused == 3
        h.down = False
        clock.advance(1.0)
        assert h.wait(lambda: h.ok == ["first"])
        assert p.submit("after")
        assert h.wait(lambda: "after" in h.ok)
    assert "refused" not in h.ok


def test_queued_items_wait_while_open_and_are_not_dead_lettered(clock: FakeClock) -> None:
    """Items queued on an open shard wait for it; none is lost or dead-lettered."""
    h = Switchable()
    h.down = True
    retry = sw.Retry(attempts=1000, backoff=0.0, jitter=False, isolate=False)
    breaker = sw.Breaker(failures=1, cooldown=5.0)
    with sw.Pipeline(
        h, shards=2, batch_size=2, clock=clock, retry=retry, breaker=breaker, key=lambda x: 0
    ) as p:
        p.submit_many(["a", "b"])
        assert h.wait(lambda: h.calls == 1)
        # The other shard's breaker is closed, so admission goes on; keyed items keep
        # their (open) shard and wait.
        assert p.submit_many(["c", "d", "e", "f"]) == 4
        assert clock.wait_for_sleepers(1)
        assert h.calls == 1
        h.down = False
        clock.advance(5.0)
        assert h.wait(lambda: len(h.ok) == 6)
    assert h.ok == ["a", "b", "c", "d", "e", "f"]  # order kept for the key
    assert p.dead_letters.records() == []


def test_unkeyed_batches_are_rerouted_around_an_open_shard(clock: FakeClock) -> None:
    """A shard whose breaker is open hands its full batches to a healthy shard."""
    h = Switchable()
    h.bad = {"poison"}
    retry = sw.Retry(attempts=1000, backoff=0.0, jitter=False, isolate=False)
    breaker = sw.Breaker(failures=1, cooldown=1000.0)
    with sw.Pipeline(
        h, shards=2, batch_size=2, capacity=40, clock=clock, retry=retry, breaker=breaker
    ) as p:
        assert p.submit("poison")  # shard 0's first slot
        assert p.submit("ok-1")  # shard 1's first slot
        assert p.submit("x")  # completes shard 0's slot -> fails -> shard 0 opens
        assert h.wait(lambda: h.calls >= 1)
        # Both workers asleep on the clock: the failed call's lease has ended, so its
        # result is on the breaker (one sleeper could be the other worker alone).
        assert clock.wait_for_sleepers(2)
        try:
            sick = [i for i, s in enumerate(_states(p)) if s == "open"]
            assert len(sick) == 1
            items = [f"n{i}" for i in range(30)]
            assert p.submit_many(items) == 30
            p.flush()
            # All handled while the breaker stays open: the healthy shard took them.
            assert h.wait(lambda: set(items) <= set(h.ok))
            assert _states(p)[sick[0]] == "open"
        finally:
            h.bad.clear()
            clock.advance(1000.0)
