"""Waking sleeping workers without a per-item check on the hot path.

Sleeping workers take roles, so that producers have at most one thread to think about:

- the *listener* sleeps with nothing queued anywhere; it sits in ``st.parked``, which
  ``submit`` tests for truthiness, and the first arrival wakes it (one slow path an idle
  period, which also stamps the arrival time exactly);
- the *timekeeper* sleeps until the earliest partial batch is due (at most ``max_delay``);
  a full batch wakes it early through a *signal token*: one token in each batch's worth
  returned to the pool is a ``Signal`` that appends and then checks for a sleeper;
- every other sleeping worker is *benched*: woken only when handlers wait on I/O and more
  batches are due than awake workers can take, or by flush, drain and stop.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ._shard import Shard
from ._state import State, Waiter, wake_bench, wake_role

__all__ = ["Signal", "arrived", "wake_bench", "wake_role"]


class Signal:
    """A token that appends like a plain one, then sees whether a full batch needs a worker."""

    __slots__ = ("__self__", "append", "shard", "st")

    def __init__(self, st: State, shard: Shard, queue: deque[Any] | None) -> None:
        self.st = st
        self.shard = shard
        self.__self__ = queue  # like a bound append: submit reads the queue from it
        self.append = None if queue is None else queue.append

    def __call__(self, item: Any) -> None:
        self.append(item)  # type: ignore[misc]
        self.check()

    def check(self) -> None:
        """Wake the timekeeper if this token's shard now holds a full batch."""
        st = self.st
        if st.timekeeper is not None and self.shard.depth() >= self.shard.batch_size:
            st.wake_timekeeper()


def arrived(st: State) -> None:
    """Slow path of ``submit``, taken only while the listener sleeps: wake it.

    Waking it stamps ``st.last_scan``, so a partial batch's age counts from this arrival.
    """
    with st.park_lock:
        if st.parked:
            wake_role(st)


def remove(waiters: deque[Waiter], waiter: Waiter) -> bool:
    """Take ``waiter`` off a list it may already have been woken from."""
    try:
        waiters.remove(waiter)
    except ValueError:
        return False
    return True
