"""``switch_interval="auto"``: a short GIL switch interval while the priority lane is in use.

Under load, a priority item waits for the thread that holds the GIL to let go of it, which
a busy thread does only every ``sys.getswitchinterval()`` (5 ms by default): measured on
the seed workload, priority p99 is 5-10 ms with the default interval and under 1 ms with
0.2 ms, at no measurable throughput cost (``docs/performance.md``). The interval is
process-wide, so a pipeline asks for it only while priority items are being submitted:
the first priority submission takes a ticket in ``_tuning`` (reference-counted with every
other pipeline, restored when the last holder lets go), and the lane's thread gives it back
once a whole ``QUIET`` period has passed with no priority submission and no batch cut.
The quiet period is real time (``time.monotonic``, injectable for tests), not the
pipeline's clock: the GIL switches in real time.

Ownership: ``seen``, ``ticket`` and ``closed`` change only under ``lock``; ``check_at``
belongs to the lane's thread (``tick``). Submitters read
``seen`` without the lock as a hint (a stale True skips one ``touch``; the next priority
submission makes it), so the lock is taken about once a ``QUIET`` period, not per item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._tuning import hold, release

__all__ = ["AUTO_INTERVAL", "QUIET", "AutoInterval"]

AUTO_INTERVAL = 0.0002  # seconds; measured in docs/performance.md ("switch interval")
QUIET = 1.0  # seconds without a priority submission before the interval is given back


class AutoInterval:
    """Holds ``interval`` while priority items arrive; see the module docstring."""

    __slots__ = ("check_at", "closed", "interval", "lock", "now", "on_hold", "seen", "ticket")

    def __init__(
        self,
        on_hold: Callable[[], None],
        interval: float = AUTO_INTERVAL,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.now = now
        self.check_at: float | None = None
        self.on_hold = on_hold  # wakes the lane's thread, which then checks every QUIET
        self.lock = threading.Lock()
        self.seen = False  # a priority item was submitted since the last check
        self.ticket: int | None = None
        self.closed = True  # until the pipeline starts: only a running lane gives it back

    @property
    def held(self) -> bool:
        """Whether this pipeline holds the short interval now."""
        return self.ticket is not None

    def open(self) -> None:
        """The pipeline started (its lane's thread runs): touches may hold from now on."""
        with self.lock:
            if self.ticket is None:
                self.closed = False

    def touch(self) -> None:
        """A priority submission (called when ``seen`` read False): hold the interval."""
        with self.lock:
            if self.closed:
                return
            self.seen = True
            if self.ticket is not None:
                return
            self.ticket = hold(self.interval, None)
        self.on_hold()

    def tick(self) -> float | None:
        """The lane's thread, each time before it sleeps: seconds until the next check.

        None while the interval is not held (nothing to check).
        """
        if self.ticket is None:
            self.check_at = None
            return None
        now = self.now()
        if self.check_at is None:
            self.check_at = now + QUIET
        elif now >= self.check_at:
            self.check()
            self.check_at = None if self.ticket is None else now + QUIET
            if self.check_at is None:
                return None
        return self.check_at - now

    def check(self) -> None:
        """The lane's thread, once a ``QUIET`` period while held: let go if nothing came."""
        with self.lock:
            if self.seen:
                self.seen = False
            elif self.ticket is not None:
                release(self.ticket)
                self.ticket = None

    def close(self) -> None:
        """Shutdown (or never started): let go for good."""
        with self.lock:
            self.closed = True
            self.seen = False
            release(self.ticket)
            self.ticket = None
