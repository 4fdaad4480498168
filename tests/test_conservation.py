"""Promise 1 under random traffic: every accepted item ends exactly once.

A hypothesis state machine submits (one, bulk, tracked, priority), flips handler failures,
flushes, waits, and shuts down at a random point (sometimes with a timeout while a handler
hangs). Whatever happens, accepted = processed + dead-lettered, item by item.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import sluiceway as sw

WAIT = 10.0


class Downstream:
    """A handler that fails on demand, records successes, and can hang."""

    def __init__(self) -> None:
        """Start healthy."""
        self.failing = False
        self.poison: set[int] = set()
        self.ok: Counter[Any] = Counter()
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        """Fail while down or when a poison item is in the batch; else record."""
        if self.failing or any(x in self.poison for x in batch):
            raise ConnectionError("down")
        with self.lock:
            self.ok.update(batch)


class Conservation(RuleBasedStateMachine):
    """Random submissions, failures, flushes and one shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self.down = Downstream()
        self.pipeline: sw.Pipeline | None = None
        self.accepted: Counter[Any] = Counter()
        self.next_id = 0
        self.report: sw.DrainReport | None = None

    @rule(
        shards=st.integers(1, 4),
        batch=st.integers(1, 9),
        capacity=st.integers(8, 60),
        keyed=st.booleans(),
    )
    @precondition(lambda self: self.pipeline is None)
    def build(self, shards: int, batch: int, capacity: int, keyed: bool) -> None:
        """Start a pipeline with random shape."""
        self.pipeline = sw.Pipeline(
            self.down,
            shards=shards,
            batch_size=batch,
            capacity=max(capacity, shards),
            max_delay=0.001,
            key=(lambda x: x % 3) if keyed else None,
        ).start()

    def _ids(self, n: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return ids

    @rule(priority=st.booleans())
    @precondition(lambda self: self.pipeline is not None)
    def submit_one(self, priority: bool) -> None:
        """One item, either lane."""
        assert self.pipeline is not None
        (item,) = self._ids(1)
        if self.pipeline.submit(item, priority):
            self.accepted[item] += 1

    @rule(n=st.integers(0, 40), tracked=st.booleans(), priority=st.booleans())
    @precondition(lambda self: self.pipeline is not None)
    def submit_bulk(self, n: int, tracked: bool, priority: bool) -> None:
        """A bulk submission; its accepted prefix is what counts."""
        assert self.pipeline is not None
        items = self._ids(n)
        if tracked:
            k = self.pipeline.submit_tracked(items, priority).accepted
        else:
            k = self.pipeline.submit_many(items, priority)
        self.accepted.update(items[:k])

    @rule(failing=st.booleans())
    def flip_failures(self, failing: bool) -> None:
        """The downstream goes down or comes back."""
        self.down.failing = failing

    @rule(item=st.integers(0, 200))
    def poison(self, item: int) -> None:
        """Some item fails every batch it is in."""
        self.down.poison.add(item)

    @rule()
    @precondition(lambda self: self.pipeline is not None)
    def flush(self) -> None:
        """Hand partial batches over now."""
        assert self.pipeline is not None
        self.pipeline.flush()

    @rule()
    @precondition(lambda self: self.pipeline is not None and self.report is None)
    def shutdown(self) -> None:
        """Drain and stop."""
        assert self.pipeline is not None
        self.report = self.pipeline.shutdown(timeout=WAIT)

    @invariant()
    def counts_never_exceed_accepted(self) -> None:
        """No item is processed that was not accepted, nor more than once."""
        with self.down.lock:
            ok = Counter(self.down.ok)
        for item, n in ok.items():
            assert n <= self.accepted[item] == 1

    def teardown(self) -> None:
        """Shut down if the run did not, then check conservation item by item."""
        if self.pipeline is None:
            return
        report = self.report or self.pipeline.shutdown(timeout=WAIT)
        dead = Counter(d.item for d in self.pipeline.dead_letters.records())
        assert report.lost == 0
        assert report.accepted == sum(self.accepted.values())
        assert report.processed == sum(self.down.ok.values())
        assert report.dead_lettered == sum(dead.values())
        assert self.down.ok + dead == self.accepted
        assert not (set(self.down.ok) & set(dead))


TestConservation = Conservation.TestCase
TestConservation.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
