"""Deterministic time for tests: :class:`FakeClock`.

Engine threads sleep through ``clock.wait(lock, timeout)``. On a FakeClock those waits end
when the test moves virtual time past their deadline with :meth:`FakeClock.advance`, or when
the engine wakes them; no test needs ``time.sleep``::

    clock = FakeClock()
    with sw.Pipeline(handler, max_delay=0.005, clock=clock) as p:
        p.submit(1)
        clock.advance(0.005)          # the partial batch is now due
        assert p.wait_idle(timeout=5)
"""

from __future__ import annotations

import threading

from ._types import LockLike

__all__ = ["FakeClock"]


class FakeClock:
    """A clock whose time moves only when told to.

    ``wait`` blocks on the real lock; a wait with a timeout is also released when
    :meth:`advance` moves virtual time past its deadline. Real-time safety: a single wait
    never blocks longer than ``real_timeout`` real seconds (a guard against a test hanging
    for ever), after which it reports a timeout only if virtual time has passed the deadline.
    """

    def __init__(self, start: float = 0.0, *, real_timeout: float = 30.0) -> None:
        self._now = start
        self._guard = threading.Lock()
        self._sleepers: dict[int, tuple[float, LockLike]] = {}
        self._next_id = 0
        self._changed = threading.Condition()
        self._real_timeout = real_timeout

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleeping={self.sleeping()})"

    def now(self) -> float:
        """The current virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward and wake every wait whose deadline has passed."""
        if seconds < 0:
            raise ValueError("seconds: cannot move a clock backwards")
        with self._guard:
            self._now += seconds
            due = [lock for deadline, lock in self._sleepers.values() if deadline <= self._now]
        for lock in due:
            try:
                lock.release()
            except RuntimeError:  # already released by someone else: the sleeper is awake
                pass

    def sleeping(self) -> int:
        """How many waits with a deadline are blocked right now."""
        with self._guard:
            return len(self._sleepers)

    def wait_for_sleepers(self, count: int, timeout: float = 10.0) -> bool:
        """Block (real time) until at least ``count`` timed waits are blocked."""
        with self._changed:
            return self._changed.wait_for(lambda: self.sleeping() >= count, timeout)

    def wait(self, lock: LockLike, timeout: float | None) -> bool:
        """Acquire ``lock``; give up once virtual time passes ``now + timeout``."""
        if timeout is None:
            return lock.acquire()
        if lock.acquire(blocking=False):
            return True
        timeout = min(timeout, threading.TIMEOUT_MAX)  # huge: as long as it takes
        with self._guard:
            deadline = self._now + max(timeout, 0.0)
            if deadline <= self._now and timeout <= 0:
                return False
            ident = self._next_id
            self._next_id += 1
            self._sleepers[ident] = (deadline, lock)
        with self._changed:
            self._changed.notify_all()
        try:
            got = lock.acquire(timeout=self._real_timeout)
        finally:
            with self._guard:
                del self._sleepers[ident]
        if got and self._now >= deadline:
            # Released by advance(), not by a waker: report the timeout, keep the lock held
            # exactly as an expired acquire would have left it.
            return False
        return got
