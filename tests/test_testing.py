"""``sluiceway.testing``: what a test sees of the fake clock."""

from __future__ import annotations

import threading

from sluiceway.testing import FakeClock


def test_fake_clock_repr_shows_virtual_time_and_sleepers() -> None:
    """``repr(FakeClock)`` gives the virtual time and how many timed waits are blocked."""
    clock = FakeClock(start=1.5)
    assert repr(clock) == "FakeClock(now=1.5, sleeping=0)"
    lock = threading.Lock()
    lock.acquire()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(clock.wait(lock, 2.0)))
    waiter.start()
    assert clock.wait_for_sleepers(1)
    assert repr(clock) == "FakeClock(now=1.5, sleeping=1)"
    clock.advance(2.0)
    waiter.join(timeout=10)
    assert results == [False]  # released by advancing past the deadline: a timeout
    assert repr(clock) == "FakeClock(now=3.5, sleeping=0)"
