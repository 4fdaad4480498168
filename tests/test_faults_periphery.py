"""Faults at the engine's periphery: policies, durations, completions, tuning, lifecycle."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import sluiceway as sw
from sluiceway._clock import MAX_SECONDS, Clock, SystemClock
from sluiceway.testing import FakeClock

from .conftest import WAIT, Recorder


def test_retry_delay_is_total_for_any_call_count() -> None:
    """Fault: ``Retry.delay`` overflowed (OverflowError) after 1025 calls in a long outage."""
    retry = sw.Retry(attempts=5000, backoff=0.05, max_backoff=2.0, jitter=False)
    assert retry.delay(1) == 0.05
    assert retry.delay(1025) == 2.0
    assert retry.delay(10**9) == 2.0
    tiny = sw.Retry(attempts=5000, backoff=1e-300, max_backoff=2.0, jitter=False)
    assert tiny.delay(2000) == 2.0  # grows past the cap even from a tiny backoff
    assert tiny.delay(10) == 1e-300 * 2**9
    zero = sw.Retry(backoff=0.0, jitter=False)
    assert zero.delay(10**6) == 0.0
    jittered = sw.Retry(attempts=5000, seed=1)
    assert 0.0 <= jittered.delay(4000) <= 2.0


@pytest.mark.parametrize(
    ("argument", "make"),
    [
        ("max_delay", lambda: sw.Pipeline(print, max_delay=1e10)),
        ("balance_interval", lambda: sw.Pipeline(print, balance_interval=1e300)),
        ("switch_interval", lambda: sw.Pipeline(print, switch_interval=1e7)),
        ("drain_timeout", lambda: sw.Pipeline(print, drain_timeout=1e300)),
        ("backoff", lambda: sw.Retry(backoff=1e300)),
        ("max_backoff", lambda: sw.Retry(max_backoff=1e7)),
        ("cooldown", lambda: sw.Breaker(cooldown=1e300)),
    ],
)
def test_huge_duration_settings_are_refused(argument: str, make: Callable[[], object]) -> None:
    """Fault: huge finite durations passed validation, then overflowed in the clock."""
    with pytest.raises(sw.ConfigError, match=r"1e\+06|1000000") as info:
        make()
    assert info.value.argument == argument


def test_duration_settings_at_the_bound_are_accepted() -> None:
    """The documented bound itself (MAX_SECONDS) is a valid setting."""
    sw.Retry(backoff=MAX_SECONDS, max_backoff=MAX_SECONDS)
    sw.Breaker(cooldown=MAX_SECONDS)
    sw.Pipeline(print, max_delay=MAX_SECONDS, balance_interval=MAX_SECONDS)


@pytest.mark.parametrize("clock", [SystemClock(), FakeClock()], ids=["system", "fake"])
def test_clock_wait_clamps_a_huge_timeout(clock: Clock) -> None:
    """Fault: ``lock.acquire(timeout=1e300)`` raised OverflowError; a huge timeout waits."""
    free = threading.Lock()
    assert clock.wait(free, 1e300) is True
    held = threading.Lock()
    held.acquire()
    threading.Timer(0.05, held.release).start()
    assert clock.wait(held, 1e300) is True


def test_huge_call_timeouts_wait_as_long_as_it_takes(recorder: Recorder) -> None:
    """Fault: ``put``/``wait_idle``/``shutdown`` with timeout=1e300 raised OverflowError."""
    recorder.gate = threading.Event()
    p = sw.Pipeline(recorder, shards=1, capacity=1, batch_size=1, max_delay=0.0).start()
    try:
        p.put(1, timeout=1e300)
        assert recorder.entered.wait(WAIT)
        threading.Timer(0.05, recorder.gate.set).start()
        p.put(2, timeout=1e300)  # waits for room until the handler returns
        assert p.wait_idle(timeout=1e300)
    finally:
        report = p.shutdown(timeout=1e300)
    assert report.processed == 2
    assert report.lost == 0


class CallbackBoom(BaseException):
    """Not an Exception: still must not kill an engine thread."""


@pytest.mark.parametrize("error", [RuntimeError("boom"), CallbackBoom()], ids=["exc", "base"])
def test_raising_on_done_does_not_stop_later_batches(
    recorder: Recorder, caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    """Fault: an ``on_done`` callback that raised killed the engine thread settling the call."""

    def on_done(_: sw.Completion) -> None:
        raise error

    p = sw.Pipeline(recorder, shards=1, workers=1, batch_size=2, max_delay=0.0).start()
    try:
        assert p.submit_many([1, 2], on_done=on_done) == 2
        assert recorder.wait_items(2)
        assert p.wait_idle(timeout=WAIT)
        for i in range(3, 13, 2):
            assert p.submit_many([i, i + 1], on_done=on_done) == 2
        assert recorder.wait_items(12)  # the one worker is still alive
        assert p.wait_idle(timeout=WAIT)
    finally:
        report = p.shutdown(timeout=WAIT)
    assert sorted(recorder.items) == list(range(1, 13))
    assert report.lost == 0
    assert report.processed == 12
    assert report.stuck_threads == 0
    assert "on_done" in caplog.text or "callback" in caplog.text


def test_add_done_callback_on_a_done_handle_logs_a_raising_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fault: a raising callback added to an already-done handle raised into the caller."""
    completion = sw.Completion()
    completion._arm(0)
    seen: list[sw.Completion] = []

    def boom(c: sw.Completion) -> None:
        seen.append(c)
        raise RuntimeError("boom")

    completion.add_done_callback(boom)
    completion.add_done_callback(seen.append)
    assert seen == [completion, completion]
    assert "boom" in caplog.text


def test_completion_is_awaitable_and_blocking_waits_refuse_on_the_loop() -> None:
    """Fault: ``Completion.wait()``/``wait_idle()`` on the handlers' loop blocked it."""
    handled: list[int] = []

    async def handler(batch: list[int]) -> None:
        await asyncio.sleep(0)
        handled.extend(batch)

    async def main() -> sw.DrainReport:
        p = sw.Pipeline(handler, shards=2, batch_size=4, max_delay=0.001)
        async with p:
            completion = p.submit_tracked(list(range(10)))
            assert completion.accepted == 10
            with pytest.raises(sw.SluicewayError, match="event loop"):
                completion.wait(0.01)
            with pytest.raises(sw.SluicewayError, match="event loop"):
                p.wait_idle(0.01)
            result = await asyncio.wait_for(completion, WAIT)
            assert result is completion
            assert completion.done()
            assert completion.processed == 10
            assert await completion is completion  # awaiting a done handle returns at once
        return await p.ashutdown()

    report = asyncio.run(main())
    assert sorted(handled) == list(range(10))
    assert report.lost == 0


def test_completion_wait_off_the_loop_still_blocks_normally(recorder: Recorder) -> None:
    """The guard only refuses on the loop thread: other threads wait as before."""

    async def handler(batch: list[int]) -> None:
        recorder(batch)

    with sw.Pipeline(handler, shards=1, batch_size=2, max_delay=0.0) as p:
        completion = p.submit_tracked([1, 2])
        assert completion.wait(WAIT)
        assert p.wait_idle(WAIT)
    assert recorder.items == [1, 2]


def test_timed_out_waits_leave_no_waiter_behind(clock: FakeClock) -> None:
    """Fault: every timed-out ``put``/``aput``/``wait_idle`` left its Waiter in the lists."""
    p = sw.Pipeline(print, shards=1, capacity=2, batch_size=2, max_delay=1.0, clock=clock)
    assert p.submit(1)
    assert p.submit(2)  # not started: full, and not idle
    for _ in range(500):
        with pytest.raises(sw.Full):
            p.put(3, timeout=0)
        assert not p.wait_idle(timeout=0)
    errors: list[BaseException] = []

    def put_one() -> None:
        try:
            p.put(3, timeout=1.0)
        except sw.Full as e:
            errors.append(e)

    threads = [threading.Thread(target=put_one) for _ in range(4)]
    for t in threads:
        t.start()
    assert clock.wait_for_sleepers(4)
    waiting = len(p._sched.room_waiters)
    clock.advance(1.0)
    for t in threads:
        t.join(WAIT)
    assert waiting <= 4  # bounded by the threads waiting
    assert len(errors) == 4

    async def aputs() -> None:
        for _ in range(200):
            with pytest.raises(sw.Full):
                await p.aput(3, timeout=0)

    asyncio.run(aputs())
    assert p._sched.room_waiters == []
    assert p._sched.idle_waiters == []
    report = p.shutdown(timeout=WAIT)
    assert report.lost == 0
