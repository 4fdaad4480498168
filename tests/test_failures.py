"""Failure handling on the fake clock: retries, permanent errors, partial failures, isolation."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT


class Flaky:
    """A handler scripted call by call: each entry is an exception to raise, or None."""

    def __init__(self, clock: FakeClock, script: list[BaseException | None] | None = None) -> None:
        """Start with a script of outcomes (after it runs out, every call succeeds)."""
        self.clock = clock
        self.script = list(script or [])
        self.calls: list[tuple[float, list[Any]]] = []
        self.ok: list[Any] = []
        self.changed = threading.Condition()
        self.poison: set[Any] = set()

    def __call__(self, batch: list[Any]) -> None:
        """Record the call, then fail as scripted or on a poison item."""
        with self.changed:
            self.calls.append((self.clock.now(), list(batch)))
            self.changed.notify_all()
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        bad = [x for x in batch if x in self.poison]
        if bad:
            raise ValueError(f"poison {bad[0]}")
        with self.changed:
            self.ok.extend(batch)
            self.changed.notify_all()

    def wait_calls(self, n: int) -> bool:
        """Block until the handler has been called ``n`` times."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.calls) >= n, WAIT)

    def wait_ok(self, n: int) -> bool:
        """Block until ``n`` items were processed."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.ok) >= n, WAIT)


def test_retry_backoff_doubles_on_the_clock(clock: FakeClock) -> None:
    """Calls come at 0, +backoff, +2*backoff (no jitter); the third one succeeds."""
    h = Flaky(clock, [ConnectionError("1"), ConnectionError("2")])
    retry = sw.Retry(attempts=3, backoff=0.1, jitter=False)
    with sw.Pipeline(h, shards=1, batch_size=2, clock=clock, retry=retry) as p:
        p.submit_many(["a", "b"])
        assert h.wait_calls(1)
        assert clock.wait_for_sleepers(1)
        clock.advance(0.099)
        assert clock.wait_for_sleepers(1)
        assert len(h.calls) == 1  # not yet
        clock.advance(0.001)
        assert h.wait_calls(2)
        assert clock.wait_for_sleepers(1)
        clock.advance(0.2)
        assert h.wait_ok(2)
        assert p.stats().retries == 2
    assert [t for t, _ in h.calls] == pytest.approx([0.0, 0.1, 0.3])
    assert p.dead_letters.records() == []


def test_max_backoff_caps_the_wait() -> None:
    """The delay doubles up to max_backoff and stays there."""
    retry = sw.Retry(attempts=10, backoff=0.1, max_backoff=0.5, jitter=False)
    assert [retry.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_full_jitter_stays_within_bounds() -> None:
    """With jitter, each delay is uniform in [0, cap]: bounded, and not constant."""
    retry = sw.Retry(backoff=0.1, max_backoff=1.0, jitter=True, seed=7)
    draws = [retry.delay(3) for _ in range(2000)]
    assert all(0.0 <= d <= 0.4 for d in draws)
    assert 0.15 < sum(draws) / len(draws) < 0.25  # mean of U(0, 0.4) is 0.2
    assert len(set(draws)) > 1000


def test_retries_exhausted_dead_letters_with_attempts(clock: FakeClock) -> None:
    """After ``attempts`` failed calls the items are dead-lettered, with the last error."""
    h = Flaky(clock, [ConnectionError(str(i)) for i in range(3)])
    retry = sw.Retry(attempts=3, backoff=0.0, jitter=False, isolate=False)
    with sw.Pipeline(h, shards=1, batch_size=2, clock=clock, retry=retry) as p:
        p.submit_many([1, 2])
        assert p.wait_idle(WAIT)
    letters = p.dead_letters.records()
    assert [d.item for d in letters] == [1, 2]
    assert {(d.reason, d.attempts, d.error_type, d.error_message) for d in letters} == {
        ("retries-exhausted", 3, "ConnectionError", "2")
    }


@pytest.mark.parametrize(
    "error", [sw.Permanent("schema"), KeyError("not retried")], ids=["permanent", "not-in-retry-on"]
)
def test_permanent_errors_skip_remaining_attempts(clock: FakeClock, error: Exception) -> None:
    """sw.Permanent, or an error outside retry_on, is dead-lettered after one call."""
    h = Flaky(clock, [error])
    retry = sw.Retry(attempts=5, retry_on=(ConnectionError,), isolate=False)
    with sw.Pipeline(h, shards=1, batch_size=1, clock=clock, retry=retry) as p:
        p.submit("x")
        assert p.wait_idle(WAIT)
    assert len(h.calls) == 1
    (letter,) = p.dead_letters.records()
    assert (letter.item, letter.reason, letter.attempts) == ("x", "permanent", 1)


def test_batch_error_retries_only_the_failed_items(clock: FakeClock) -> None:
    """BatchError(failed={1: e}): items 0, 2, 3 count as processed; item 1 is retried."""
    h = Flaky(clock, [sw.BatchError({1: ConnectionError("one")})])
    retry = sw.Retry(attempts=3, backoff=0.5, jitter=False)
    with sw.Pipeline(h, shards=1, batch_size=4, clock=clock, retry=retry) as p:
        c = p.submit_tracked(["a", "b", "c", "d"])
        assert h.wait_calls(1)
        assert clock.wait_for_sleepers(1)
        assert p.stats().processed == 3
        clock.advance(0.5)
        assert c.wait(WAIT)
    assert [batch for _, batch in h.calls] == [["a", "b", "c", "d"], ["b"]]
    assert (c.processed, c.dead_lettered) == (4, 0)
    assert h.ok == ["b"]


def test_bisection_finds_one_poison_item_among_256(clock: FakeClock) -> None:
    """One poison item in a batch of 256: found in 2*log2(256) extra calls, alone."""
    h = Flaky(clock)
    h.poison = {137}
    retry = sw.Retry(attempts=1, backoff=0.0)
    with sw.Pipeline(h, shards=1, batch_size=256, clock=clock, retry=retry) as p:
        assert p.submit_many(range(256)) == 256
        assert p.wait_idle(WAIT)
    assert len(h.calls) == 1 + 2 * 8
    assert sorted(h.ok) == [i for i in range(256) if i != 137]
    (letter,) = p.dead_letters.records()
    assert (letter.item, letter.reason) == (137, "retries-exhausted")


def test_isolation_is_bounded_when_everything_fails(clock: FakeClock) -> None:
    """A downstream that fails every call does not bisect down to every single item."""
    h = Flaky(clock, [ConnectionError("down")] * 1000)
    retry = sw.Retry(attempts=1, backoff=0.0)
    with sw.Pipeline(h, shards=1, batch_size=64, clock=clock, retry=retry) as p:
        p.submit_many(range(64))
        assert p.wait_idle(WAIT)
    assert len(h.calls) <= 1 + 2 * 6 + 2
    assert len(p.dead_letters.records()) == 64


def test_isolation_can_be_switched_off(clock: FakeClock) -> None:
    """isolate=False dead-letters the whole batch once its attempts are used up."""
    h = Flaky(clock)
    h.poison = {3}
    with sw.Pipeline(
        h, shards=1, batch_size=8, clock=clock, retry=sw.Retry(attempts=1, isolate=False)
    ) as p:
        p.submit_many(range(8))
        assert p.wait_idle(WAIT)
    assert len(h.calls) == 1
    assert len(p.dead_letters.records()) == 8


def test_backoff_does_not_block_other_shards_or_priority(clock: FakeClock) -> None:
    """While one shard waits out a long backoff, another shard and the priority lane run."""
    poisoned = {"bad"}
    done: list[Any] = []
    prio: list[Any] = []
    lock = threading.Lock()
    got = threading.Condition(lock)

    def handler(batch: list[Any]) -> None:
        if poisoned & set(batch):
            raise ConnectionError("down")
        with got:
            done.extend(batch)
            got.notify_all()

    def on_priority(item: Any) -> None:
        with got:
            prio.append(item)
            got.notify_all()

    retry = sw.Retry(attempts=5, backoff=100.0, jitter=False)
    with sw.Pipeline(
        handler,
        shards=2,
        batch_size=1,
        clock=clock,
        retry=retry,
        key=lambda x: x,
        priority_handler=on_priority,
    ) as p:
        p.submit("bad")
        others = [f"k{i}" for i in range(40)]
        for item in others:
            p.submit(item)
        p.submit("urgent", priority=True)
        with got:
            assert got.wait_for(lambda: len(prio) == 1, WAIT)
            mask = p._st.cfg.partitions - 1
            owner = p._st.owner
            healthy = [x for x in others if owner[hash(x) & mask] is not owner[hash("bad") & mask]]
            assert healthy
            assert got.wait_for(lambda: set(healthy) <= set(done), WAIT)
        poisoned.clear()
        clock.advance(100.0)


def test_priority_items_are_retried_too(clock: FakeClock) -> None:
    """A failing priority handler call is retried after the backoff, then succeeds."""
    calls: list[float] = []
    seen = threading.Event()

    def on_priority(item: Any) -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise ConnectionError("once")
        seen.set()

    retry = sw.Retry(attempts=2, backoff=0.3, jitter=False)
    with sw.Pipeline(lambda b: None, clock=clock, retry=retry, priority_handler=on_priority) as p:
        p.submit("urgent", priority=True)
        assert clock.wait_for_sleepers(1)
        clock.advance(0.3)
        assert seen.wait(WAIT)
    assert calls == pytest.approx([0.0, 0.3])
    assert p.stats().processed == 1


def test_shutdown_with_a_dead_downstream_finishes_in_time(clock: FakeClock) -> None:
    """Retrying with long backoffs, shutdown(timeout) dead-letters the rest and returns."""
    h = Flaky(clock, [ConnectionError("down")] * 100)
    retry = sw.Retry(attempts=10, backoff=5.0, jitter=False)
    p = sw.Pipeline(h, shards=2, batch_size=4, clock=clock, retry=retry).start()
    p.submit_many(range(10))
    p.flush()
    assert h.wait_calls(2)
    reports: list[sw.DrainReport] = []
    t = threading.Thread(target=lambda: reports.append(p.shutdown(timeout=2.0)))
    t.start()
    for _ in range(40):  # move fake time on until shutdown's own timeout has passed
        if not t.is_alive():
            break
        clock.advance(0.25)
        t.join(0.05)
    t.join(WAIT)
    (report,) = reports
    assert clock.now() < 5.0  # it gave up before the first retry was even due
    assert report.timed_out
    assert (report.accepted, report.processed, report.dead_lettered, report.lost) == (10, 0, 10, 0)
    assert {d.reason for d in p.dead_letters.records()} == {"shutdown-timeout"}
