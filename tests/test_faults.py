"""Faults that once wedged the engine, lost items or broke its books; one test each.

Each test names the fault it pins down. Timers run on the fake clock; where real threads
must get a moment to react, the test waits for them with a bounded real-time wait.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT


def settle_down(p: sw.Pipeline, clock: FakeClock, *, virtual: float = 20.0) -> bool:
    """Move virtual time in small steps until ``p`` is idle; False if it never gets there.

    Liveness, not only safety: after the faults stop, a healthy engine drains within a
    bounded amount of (virtual) time. Between steps the engine threads get a moment of
    real time to react (a thread hand-off, not a timer: timers run on the fake clock).
    """
    end = clock.now() + virtual
    while clock.now() < end:
        p.flush()
        if p.wait_idle(0):
            return True
        step(clock)
    return p.wait_idle(0)


def step(clock: FakeClock, seconds: float = 0.01) -> None:
    """Advance virtual time, then let the engine's threads run for a moment."""
    clock.advance(seconds)
    time.sleep(0.002)


def shutdown_returns(p: sw.Pipeline) -> sw.DrainReport:
    """``shutdown()`` without a timeout, which must return (checked in real time)."""
    reports: list[sw.DrainReport] = []
    t = threading.Thread(target=lambda: reports.append(p.shutdown()), daemon=True)
    t.start()
    t.join(WAIT)
    assert reports, "shutdown() without a timeout did not return"
    return reports[0]


class Flapping:
    """A downstream that fails every other call while ``flapping``, and records successes."""

    def __init__(self) -> None:
        """Start flapping."""
        self.flapping = True
        self.calls = 0
        self.ok: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        """Fail on odd calls while flapping; record the batch otherwise."""
        with self.lock:
            self.calls += 1
            fail = self.flapping and self.calls % 2
        if fail:
            raise ConnectionError("flap")
        with self.lock:
            self.ok.extend(batch)


@pytest.mark.parametrize("keyed", [False, True])
def test_a_breaker_in_front_of_a_flapping_downstream_never_wedges(
    clock: FakeClock, keyed: bool
) -> None:
    """Fault: a half-open breaker's probe mark leaked when a lease ran nothing.

    Shards then stayed half-open with a probe "in flight" for ever, nothing was scheduled
    on them, and ``shutdown()`` hung. After the downstream recovers, the pipeline must go
    idle and every item must be processed exactly once.
    """
    h = Flapping()
    key: Callable[[Any], Any] | None = (lambda x: x % 7) if keyed else None
    p = sw.Pipeline(
        h,
        shards=4,
        batch_size=4,
        capacity=4096,
        clock=clock,
        key=key,
        retry=sw.Retry(attempts=1000, backoff=0.01, jitter=False, isolate=False),
        breaker=sw.Breaker(failures=2, cooldown=0.05),
    ).start()
    accepted = 0
    for _ in range(100):
        accepted += p.submit_many(range(accepted, accepted + 25))
        step(clock, 0.013)
    assert h.calls > 40  # the downstream really flapped under the breakers
    h.flapping = False
    assert settle_down(p, clock), f"wedged: {p.stats()}"
    assert all(s.breaker == "closed" for s in p.stats().shards)
    report = shutdown_returns(p)
    assert report.lost == 0
    assert sorted(h.ok) == list(range(accepted))


def _flap_behind_breakers(seed: int, switch_interval: float) -> bool:
    """0.5 s of a downstream failing half its calls; True if the pipeline then goes idle."""
    rng = random.Random(seed)
    flapping = [True]
    lock = threading.Lock()

    def handler(batch: list[int]) -> None:
        with lock:
            if flapping[0] and rng.random() < 0.5:
                raise ConnectionError("flap")

    p = sw.Pipeline(
        handler,
        shards=8,
        batch_size=8,
        capacity=8192,
        retry=sw.Retry(attempts=1000, backoff=0.01, jitter=False, isolate=False),
        breaker=sw.Breaker(failures=2, cooldown=0.05),
        switch_interval=switch_interval,
    ).start()
    accepted = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        accepted += p.submit_many(range(accepted, accepted + 30))
        time.sleep(0.001)
    flapping[0] = False
    p.flush()
    idle = p.wait_idle(WAIT)
    assert shutdown_returns(p).lost == 0
    return idle


def test_suspending_admission_never_strands_items_behind_an_unfilled_slot() -> None:
    """Every breaker opening suspends admission while a producer is taking tokens.

    With a short switch interval the producer ran in the middle of ``suspend``'s pops and
    took tokens of later slots; once the producer stopped, items sat in slots behind an
    earlier slot whose tokens were back in the pool, unseen by every scan: the pipeline
    never went idle (1 run in 1-15 at 0.2 ms). The pool is now drained in one C-level step.
    """
    wedged = [seed for seed in range(6) if not _flap_behind_breakers(seed, 0.0001)]
    assert not wedged, f"runs {wedged} never went idle"


@pytest.mark.parametrize("keyed", [False, True])
def test_a_breaker_in_front_of_a_flapping_downstream_in_real_time(keyed: bool) -> None:
    """The same fault on the real clock, where it showed: shards ended half-open for good.

    A downstream failing half its calls at random for 0.6 s behind ``Breaker(failures=2,
    cooldown=0.05)``; once it recovers the pipeline must go idle and shut down.
    """
    rng = random.Random(7)
    flapping = True
    ok: list[int] = []
    lock = threading.Lock()

    def handler(batch: list[int]) -> None:
        with lock:
            if flapping and rng.random() < 0.5:
                raise ConnectionError("flap")
            ok.extend(batch)

    p = sw.Pipeline(
        handler,
        shards=8,
        batch_size=8,
        capacity=8192,
        key=(lambda x: x % 13) if keyed else None,
        retry=sw.Retry(attempts=1000, backoff=0.01, jitter=False, isolate=False),
        breaker=sw.Breaker(failures=2, cooldown=0.05),
    ).start()
    accepted = 0
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        accepted += p.submit_many(range(accepted, accepted + 30))
        time.sleep(0.001)  # a paced producer
    flapping = False
    p.flush()
    assert p.wait_idle(WAIT), f"wedged: {[s.breaker for s in p.stats().shards]}"
    report = shutdown_returns(p)
    assert report.lost == 0
    assert sorted(ok) == list(range(accepted))


def test_a_handler_that_changes_its_list_does_not_break_the_books(recorder: Any) -> None:
    """Fault: the engine counted outcomes from the handler's list, which the handler owns.

    A handler that clears, pops or appends to its batch lost items, never went idle or let
    capacity grow past its bound. The engine accounts from its own record of the batch.
    """
    seen: list[Any] = []

    def rude(batch: list[Any]) -> None:
        seen.extend(batch)
        if len(seen) % 3 == 0:
            batch.clear()
        elif len(seen) % 3 == 1:
            batch.append("extra")
        else:
            while batch:
                batch.pop()

    with sw.Pipeline(rude, shards=2, batch_size=8, capacity=64, max_delay=0.001) as p:
        total = 0
        for _ in range(20):
            total += p.submit_many(range(total, total + 40))
            assert p.wait_idle(WAIT)
        stats = p.stats()
        assert stats.in_flight == 0
        assert stats.processed == total
        assert p.submit_many(range(64)) == 64  # exactly the capacity, no more, no less
        assert p.submit(0) is False
    report = p.shutdown()
    assert report.lost == 0
    assert sorted(seen) == sorted([*range(total), *range(64)])


def test_a_priority_retry_running_at_a_shutdown_timeout_is_dead_lettered(
    clock: FakeClock,
) -> None:
    """Fault: priority retries ran outside the in-flight accounting.

    A priority item whose retry call was running when ``shutdown(timeout)`` expired got
    no outcome at all (``lost == 1``, no dead letter).
    """
    calls: list[Any] = []
    release = threading.Event()
    entered = threading.Event()

    def flaky(item: Any) -> None:
        calls.append(item)
        if len(calls) == 1:
            raise ConnectionError("first call fails")
        entered.set()
        release.wait(WAIT)  # the retry hangs past the shutdown timeout

    retry = sw.Retry(attempts=3, backoff=1.0, jitter=False)
    p = sw.Pipeline(
        lambda b: None, priority_handler=flaky, clock=clock, retry=retry, workers=1, shards=1
    ).start()
    try:
        assert p.submit("urgent", priority=True)
        assert clock.wait_for_sleepers(1)  # the failed item waits out its backoff
        clock.advance(1.0)
        assert entered.wait(WAIT)  # the retry call is running
        reports: list[sw.DrainReport] = []
        t = threading.Thread(target=lambda: reports.append(p.shutdown(timeout=2.0)))
        t.start()
        assert clock.wait_for_sleepers(1)
        clock.advance(2.0)
        t.join(WAIT)
        (report,) = reports
        assert report.timed_out
        assert report.lost == 0
        assert (report.accepted, report.dead_lettered) == (1, 1)
        (letter,) = p.dead_letters.records()
        assert (letter.item, letter.reason, letter.shard) == ("urgent", "shutdown-timeout", None)
    finally:
        release.set()


async def _store(seen: list[Any], batch: list[Any]) -> None:
    await asyncio.sleep(0)
    seen.extend(batch)


def test_a_plain_handler_returning_a_coroutine_has_it_awaited() -> None:
    """Fault: a lambda around an async function counted items processed though nothing ran.

    The coroutine it returns is awaited (on a private loop), so the work really happens.
    """
    seen: list[Any] = []

    @functools.wraps(_store)
    def wrapped(batch: list[Any]) -> Any:
        return _store(seen, batch)

    for handler in (lambda batch: _store(seen, batch), wrapped):
        seen.clear()
        with sw.Pipeline(handler, shards=2, batch_size=4, max_delay=0.001) as p:
            assert p.submit_many(range(10)) == 10
        assert sorted(seen) == list(range(10))
        assert p.shutdown().processed == 10


def test_a_blocking_dead_letter_sink_does_not_stretch_a_shutdown_timeout() -> None:
    """Fault: shutdown(timeout=1.0) took as long as a blocked dead-letter sink.

    The sink runs on its own thread: the engine keeps going and the shutdown returns
    within its timeout, reporting what the sink has not taken.
    """
    release = threading.Event()
    taken: list[sw.DeadLetter] = []

    def stuck_sink(records: list[sw.DeadLetter]) -> None:
        taken.extend(records)
        release.wait(WAIT)

    def reject(batch: list[Any]) -> None:
        raise sw.Permanent("no")

    p = sw.Pipeline(reject, shards=1, batch_size=2, max_delay=0.001, dead_letter=stuck_sink)
    try:
        p.start()
        assert p.submit_many([1, 2]) == 2
        assert p.submit_many([3, 4]) == 2
        done = threading.Event()

        def stop() -> None:
            p.shutdown(timeout=0.3)
            done.set()

        threading.Thread(target=stop).start()
        assert done.wait(3.0), "shutdown(timeout=0.3) waited for the blocked sink"
        report = p.shutdown()
        assert report.lost == 0
        assert report.dead_lettered == 4
        assert len(taken) + report.undelivered >= 4
    finally:
        release.set()


class Fatal(BaseException):
    """Not an Exception: what a sink might raise (like KeyboardInterrupt or SystemExit)."""


def test_a_dead_letter_sink_raising_a_base_exception_kills_no_worker() -> None:
    """Fault: a sink raising a BaseException subclass killed every worker thread."""

    def bad_sink(records: list[sw.DeadLetter]) -> None:
        raise Fatal("sink down")

    good: list[Any] = []

    def handler(batch: list[Any]) -> None:
        if "poison" in batch:
            raise sw.Permanent("bad item")
        good.extend(batch)

    with sw.Pipeline(handler, shards=1, batch_size=1, max_delay=0.001, dead_letter=bad_sink) as p:
        assert p.submit("poison")
        assert p.wait_idle(WAIT)
        assert p.submit_many(range(5)) == 5  # the engine goes on after the sink failed
        assert p.wait_idle(WAIT)
        assert good == list(range(5))
        assert [r.item for r in p.undelivered_dead_letters()] == ["poison"]
    assert p.shutdown().lost == 0


def test_adaptive_batch_size_reaches_a_backlog_admitted_earlier(clock: FakeClock) -> None:
    """Fault: unkeyed slots were cut at admission, so a grown batch size never applied.

    30,000 items admitted at batch size 16 were all handled 16 at a time while the stats
    said 256. The handler must see the grown size on the old backlog too.
    """
    sizes: list[int] = []
    p = sw.Pipeline(
        lambda batch: sizes.append(len(batch)),
        shards=1,
        batch_size=16,
        min_batch=16,
        max_batch=256,
        capacity=32_768,
        clock=clock,
    )
    assert p.submit_many(range(30_000)) == 30_000
    p.start()
    assert settle_down(p, clock)
    assert sum(sizes) == 30_000
    assert max(sizes) > 16
    assert p.stats().batch_size_changes > 0
    p.shutdown()


def test_in_flight_never_reads_above_capacity_under_saturating_submit_many() -> None:
    """Fault: ``in_flight`` and the fill ratio over-read under a saturating producer.

    They were derived from counters read at different moments (in_flight 95,488 with
    capacity 65,536; fill ratio 1.30). The autoscaling signal must stay within 0..1.
    """
    capacity = 4096
    stop = threading.Event()

    def busy(batch: list[Any]) -> None:
        sum(range(3000))  # slower than the producer: the queues stay full

    p = sw.Pipeline(busy, shards=4, batch_size=64, capacity=capacity).start()
    chunk = list(range(1000))

    def produce() -> None:
        while not stop.is_set():
            p.submit_many(chunk)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        readings = [p.stats().in_flight for _ in range(3000)]
    finally:
        stop.set()
        producer.join(WAIT)
    assert max(readings) <= capacity
    assert min(readings) >= 0
    assert p.shutdown().lost == 0


def test_a_keyed_steal_racing_tracked_submissions_hands_only_items_to_the_handler() -> None:
    """Fault: a keyed steal raced a tracked ``submit_many``.

    The producer counted its chunk on the shard the partition had just left, the taker
    handed a ``Chunk`` object to the handler, and the completion never settled. Chunk
    counts now travel with the partition's queue.
    """
    bad: list[Any] = []
    seen: list[int] = []
    lock = threading.Lock()
    slow = threading.Event()

    def handler(batch: list[Any]) -> None:
        if sw.current_shard() == 0:
            slow.wait(0.0005)  # shard 0 lags, so the balancer keeps stealing from it
        with lock:
            for x in batch:
                if isinstance(x, int):
                    seen.append(x)
                else:
                    bad.append(x)

    p = sw.Pipeline(
        handler, shards=4, batch_size=4, key=lambda x: x % 64, balance_interval=0.0001
    ).start()
    completions: list[sw.Completion] = []
    n = 0
    for _ in range(300):
        batch = list(range(n, n + 20))
        n += 20
        completions.append(p.submit_tracked(batch))
    assert all(c.wait(WAIT) for c in completions), "a completion never settled"
    steals = sum(s.steals_out for s in p.stats().shards)
    report = p.shutdown()
    assert bad == []
    assert report.lost == 0
    accepted = sum(c.accepted for c in completions)
    assert sum(c.processed for c in completions) == accepted == len(seen)
    assert steals > 0  # the mechanism under test really ran


class Unprintable(Exception):
    """An exception whose ``str()`` itself raises (a library error missing an attribute)."""

    def __str__(self) -> str:
        """Fail, as a broken ``__str__`` does."""
        raise RuntimeError("no message attribute")


@pytest.mark.parametrize("lane", ["regular", "priority"])
def test_an_exception_that_cannot_print_itself_is_still_dead_lettered(lane: str) -> None:
    """Fault: describing such an error for the dead letter raised inside the engine.

    The whole batch then had no outcome and its capacity never came back.
    """

    def handler(batch: list[Any]) -> None:
        raise Unprintable

    def item_handler(item: Any) -> None:
        raise Unprintable

    with sw.Pipeline(
        handler, priority_handler=item_handler, shards=1, batch_size=2, capacity=40, max_delay=0
    ) as p:
        priority = lane == "priority"
        assert p.submit_many(range(4), priority=priority) == 4
        p.flush()
        assert p.wait_idle(WAIT)
        letters = p.dead_letters.records()
        assert sorted(d.item for d in letters) == [0, 1, 2, 3]
        assert {d.error_type for d in letters} == {"Unprintable"}
        room = 4 if priority else 40
        assert p.submit_many(range(room), priority=priority) == room  # the capacity came back
    assert p.shutdown().lost == 0


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("plain", [False, True])
def test_an_async_handler_raising_keyboardinterrupt_does_not_stop_its_loop(
    exc: type[BaseException], plain: bool
) -> None:
    """Fault: the exception escaped into the loop thread, which died; workers waited for ever."""
    calls: list[Any] = []

    async def failing(batch: list[Any]) -> None:
        calls.extend(batch)
        if len(calls) == 1:
            raise exc("from the handler")

    def plain_handler(batch: list[Any]) -> Any:
        return failing(batch)

    handler: Any = plain_handler if plain else failing
    with sw.Pipeline(handler, shards=1, batch_size=1, max_delay=0, capacity=8) as p:
        assert p.submit_many(range(3)) == 3
        assert p.wait_idle(WAIT)
        (letter,) = p.dead_letters.records()
        assert (letter.item, letter.error_type) == (0, exc.__name__)
    report = shutdown_returns(p)
    assert (report.processed, report.dead_lettered, report.lost) == (2, 1, 0)


def test_an_async_handler_whose_loop_ended_fails_instead_of_hanging() -> None:
    """Fault: the loop that ran the async handlers ended (``asyncio.run`` returned) first.

    Batches handed to it afterwards never resolved, so ``shutdown()`` never returned. They
    now fail (and are dead-lettered after the retry policy) instead.
    """
    seen: list[Any] = []

    async def handler(batch: list[Any]) -> None:
        seen.extend(batch)

    async def main() -> sw.Pipeline:
        p = sw.Pipeline(handler, shards=1, batch_size=4, max_delay=60.0)
        p.start()  # on this loop, which ends when main() returns
        assert p.submit_many(range(3)) == 3
        return p

    p = asyncio.run(main())
    report = shutdown_returns(p)
    assert report.lost == 0
    assert report.processed + report.dead_lettered == 3


def test_a_dead_letter_sink_that_changes_its_list_loses_nothing() -> None:
    """Fault: each retry of the sink got the same list, which a failing sink had emptied."""
    tries: list[int] = []
    got: list[Any] = []

    def sink(records: list[sw.DeadLetter]) -> None:
        tries.append(len(records))
        if len(tries) == 1:
            records.clear()
            raise ConnectionError("sink hiccup")
        got.extend(r.item for r in records)

    def reject(batch: list[Any]) -> None:
        raise sw.Permanent("no")

    with sw.Pipeline(reject, shards=1, batch_size=4, max_delay=0, dead_letter=sink) as p:
        assert p.submit_many(range(4)) == 4
        assert p.wait_idle(WAIT)
    assert sorted(got) == [0, 1, 2, 3]
    assert tries[:2] == [4, 4]


@pytest.mark.parametrize(
    ("failed", "processed"),
    [({-1: ValueError()}, 3), ({4: ValueError()}, 0), ({"0": ValueError()}, 0)],
)
def test_batch_error_indices_that_name_no_item_fail_the_whole_batch(
    failed: dict[Any, BaseException], processed: int
) -> None:
    """Fault: unrecognised ``BatchError`` indices counted every item as processed, silently.

    Negative indices count from the end; any key naming no item fails the whole batch.
    """
    calls: list[int] = []

    def handler(batch: list[Any]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise sw.BatchError(failed)

    with sw.Pipeline(handler, shards=1, batch_size=4, max_delay=60.0) as p:
        assert p.submit_many(range(4)) == 4
        p.flush()
        assert p.wait_idle(WAIT)
        letters = p.dead_letters.records()
    assert len(letters) == 4 - processed
    assert p.shutdown().processed == processed


class Raising(logging.Handler):
    """A user's log handler that raises from ``emit`` (``Handler.handle`` does not catch)."""

    def __init__(self) -> None:
        """Count the records it refused."""
        super().__init__()
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Raise on every record."""
        self.calls += 1
        raise RuntimeError("log handler down")


def test_a_log_handler_that_raises_kills_no_engine_thread(clock: FakeClock) -> None:
    """Fault: a raising log handler on the ``sluiceway`` logger escaped the engine's logging.

    Breaker changes and failing calls are logged from a worker between its lease and its
    release; the error took the thread down, or left the shard leased for good.
    """
    bad = Raising()
    engine_log = logging.getLogger("sluiceway")
    engine_log.addHandler(bad)
    try:
        h = Flapping()
        p = sw.Pipeline(
            h,
            shards=2,
            batch_size=2,
            clock=clock,
            retry=sw.Retry(attempts=1000, backoff=0.01, jitter=False, isolate=False),
            breaker=sw.Breaker(failures=1, cooldown=0.05),
        ).start()
        assert p.submit_many(range(20)) == 20
        for _ in range(10):
            step(clock, 0.02)
        h.flapping = False
        assert settle_down(p, clock), f"wedged: {p.stats()}"
        assert bad.calls > 0  # the engine really logged through the raising handler
        assert sorted(h.ok) == list(range(20))
        assert shutdown_returns(p).lost == 0
        assert not [t for t in threading.enumerate() if t.name.startswith("sluiceway-w")]
    finally:
        engine_log.removeHandler(bad)
