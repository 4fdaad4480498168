"""Faults at the engine's periphery: policies, durations, completions, tuning, lifecycle."""

from __future__ import annotations

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
