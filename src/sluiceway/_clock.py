"""Time, injectable: every delay, timeout and timestamp in the engine goes through a Clock.

The engine never calls ``time.sleep``. Threads wait by acquiring a lock with a timeout, and
the clock decides what that timeout means: real seconds for :class:`SystemClock`, virtual
seconds for :class:`sluiceway.testing.FakeClock`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

from ._types import LockLike

__all__ = ["MAX_SECONDS", "Clock", "SystemClock"]

# The longest duration a *setting* may take (a delay, a backoff, a cool-down, a drain
# timeout): about 11.6 days. Larger finite values are refused with a ConfigError naming it.
# Call timeouts (``put``, ``wait_idle``, ``shutdown``) are not bounded: a clock clamps them
# to ``threading.TIMEOUT_MAX``, since a huge timeout means "wait as long as it takes".
MAX_SECONDS = 1e6


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from time."""

    def now(self) -> float:
        """Seconds on a monotonic scale (the origin is arbitrary)."""
        ...

    def wait(self, lock: LockLike, timeout: float | None) -> bool:
        """Acquire ``lock``, giving up after ``timeout`` clock seconds (None: never).

        Returns True if the lock was acquired. This is how every engine thread sleeps:
        another thread wakes it early by releasing the lock.
        """
        ...


class SystemClock:
    """Real time: ``time.monotonic`` and plain lock timeouts."""

    __slots__ = ()

    now = staticmethod(time.monotonic)

    def wait(self, lock: LockLike, timeout: float | None) -> bool:
        """Acquire ``lock`` within ``timeout`` real seconds."""
        if timeout is None:
            return lock.acquire()
        return lock.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX))
