"""Promise 1 under random traffic and faults: every accepted item ends exactly once.

A hypothesis state machine builds a pipeline with a random shape, retry policy and breaker,
submits (one, bulk, tracked, priority), switches the downstream between healthy, down,
permanently failing and partially failing, poisons items, breaks the dead-letter sink,
flushes, and shuts down at a random point (with a short timeout under faults, or healed
without one). Whatever happens, accepted = processed + dead-lettered, item by item, and no
item is both. Liveness too: once the downstream and the sink are healthy, the pipeline goes
idle within a bound and ``shutdown()`` without a timeout returns; a timed-out drain is
accepted only from a shutdown that asked for a timeout while faults were on.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import sluiceway as sw

LIVENESS = 5.0  # seconds in which a healed pipeline must go idle
SHUTDOWN_REAL = 5.0  # real seconds in which shutdown() without a timeout must return


def bounded_shutdown(p: sw.Pipeline, timeout: float | None) -> sw.DrainReport | None:
    """``p.shutdown(timeout)`` in a thread: its report, or None if it hung."""
    out: list[sw.DrainReport] = []
    t = threading.Thread(target=lambda: out.append(p.shutdown(timeout)), daemon=True)
    t.start()
    t.join(SHUTDOWN_REAL + (timeout or 0.0))
    return out[0] if out else None


class Downstream:
    """A handler that fails in the ways real downstreams do, and records successes."""

    def __init__(self) -> None:
        """Start healthy."""
        self.mode = "ok"  # ok | down | permanent | partial
        self.poison: set[int] = set()
        self.ok: Counter[Any] = Counter()
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        """Fail as the mode says, or on a poison item; else record the batch."""
        if self.mode == "down" or any(x in self.poison for x in batch):
            raise ConnectionError("down")
        if self.mode == "permanent":
            raise sw.Permanent("rejected")
        if self.mode == "partial" and len(batch) > 1:
            with self.lock:
                self.ok.update(batch[1:])
            raise sw.BatchError({0: ConnectionError("first one failed")})
        with self.lock:
            self.ok.update(batch)


class Sink:
    """A dead-letter sink that can be made to fail."""

    def __init__(self) -> None:
        """Start working."""
        self.failing = False
        self.records: list[sw.DeadLetter] = []
        self.lock = threading.Lock()

    def __call__(self, records: list[sw.DeadLetter]) -> None:
        """Keep the records, or raise while failing."""
        if self.failing:
            raise OSError("sink down")
        with self.lock:
            self.records.extend(records)


class Conservation(RuleBasedStateMachine):
    """Random submissions, failures, flushes and one shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self.down = Downstream()
        self.sink = Sink()
        self.pipeline: sw.Pipeline | None = None
        self.accepted: Counter[Any] = Counter()
        self.next_id = 0
        self.report: sw.DrainReport | None = None
        self.hung = False

    @rule(
        shards=st.integers(1, 4),
        batch=st.integers(1, 9),
        capacity=st.integers(8, 60),
        keyed=st.booleans(),
        attempts=st.none() | st.integers(1, 4),
        isolate=st.booleans(),
        breaker=st.none() | st.integers(1, 3),
    )
    @precondition(lambda self: self.pipeline is None)
    def build(
        self,
        shards: int,
        batch: int,
        capacity: int,
        keyed: bool,
        attempts: int | None,
        isolate: bool,
        breaker: int | None,
    ) -> None:
        """Start a pipeline with a random shape and failure policy."""
        retry = None
        if attempts is not None:
            retry = sw.Retry(attempts=attempts, backoff=0.0005, max_backoff=0.002, isolate=isolate)
        self.pipeline = sw.Pipeline(
            self.down,
            shards=shards,
            batch_size=batch,
            capacity=max(capacity, shards),
            max_delay=0.001,
            key=(lambda x: x % 3) if keyed else None,
            retry=retry,
            breaker=None if breaker is None else sw.Breaker(failures=breaker, cooldown=0.002),
            dead_letter=self.sink,
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

    @rule(mode=st.sampled_from(["ok", "ok", "down", "permanent", "partial"]))
    def downstream_mode(self, mode: str) -> None:
        """The downstream changes how it behaves."""
        self.down.mode = mode

    @rule(failing=st.booleans())
    def flip_sink(self, failing: bool) -> None:
        """The dead-letter sink breaks or recovers."""
        self.sink.failing = failing

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

    @rule(timeout=st.sampled_from([None, 0.0, 0.005]))
    @precondition(lambda self: self.pipeline is not None and self.report is None)
    def shutdown(self, timeout: float | None) -> None:
        """Drain and stop: with a timeout under faults, or healed and without one."""
        assert self.pipeline is not None
        if timeout is None:
            self.heal()
        report = bounded_shutdown(self.pipeline, timeout)
        if report is None:
            self.hung = True
        assert report is not None, f"shutdown(timeout={timeout}) did not return"
        if timeout is None:
            assert not report.timed_out
        self.report = report

    def heal(self) -> None:
        """The faults stop: the downstream and the sink work again."""
        self.down.mode = "ok"
        self.sink.failing = False

    @invariant()
    def counts_never_exceed_accepted(self) -> None:
        """No item is processed that was not accepted, nor more than once."""
        with self.down.lock:
            ok = Counter(self.down.ok)
        for item, n in ok.items():
            assert n <= self.accepted[item] == 1
        with self.sink.lock:
            dead = Counter(d.item for d in self.sink.records)
        assert not set(ok & dead) - self.late()

    def late(self) -> set[Any]:
        """Items a timed-out shutdown dead-lettered while their handler call was running.

        Such a call may return later; it changes nothing (README, guarantees), so the item
        shows up in the downstream's books too, and its one outcome is the dead letter.
        """
        if self.report is None or not self.report.timed_out:
            return set()
        with self.sink.lock:
            kept = list(self.sink.records)
        kept += self.pipeline.undelivered_dead_letters() if self.pipeline else []
        return {d.item for d in kept if d.reason == "shutdown-timeout"}

    def teardown(self) -> None:
        """Heal; prove liveness if the run did not shut down; check conservation item by item.

        Poison items stay poisonous: they must end as dead letters, not wedge the pipeline.
        """
        if self.pipeline is None or self.hung:
            return
        self.heal()
        report = self.report
        if report is None:
            self.pipeline.flush()
            idle = self.pipeline.wait_idle(timeout=LIVENESS)
            stats = self.pipeline.stats()
            report = bounded_shutdown(self.pipeline, None)
            assert idle, f"not idle {LIVENESS} s after faults stopped: {stats}"
            assert report is not None, "shutdown() without a timeout did not return"
            assert not report.timed_out
        kept = self.sink.records + self.pipeline.undelivered_dead_letters()
        dead = Counter(d.item for d in kept)
        assert all(d.reason for d in kept)
        assert report.lost == 0
        assert report.accepted == sum(self.accepted.values())
        ok = Counter({x: n for x, n in self.down.ok.items() if x not in self.late() or not dead[x]})
        assert report.processed == sum(ok.values())
        assert report.dead_lettered == sum(dead.values())
        assert ok + dead == self.accepted
        assert not (set(ok) & set(dead))


TestConservation = Conservation.TestCase
TestConservation.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
