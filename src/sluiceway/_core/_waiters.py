"""Waiting for outcomes: ``wait_idle`` and every ``shutdown`` caller's drain.

A waiter registers with the scheduler before it looks, so a finisher's wake-up cannot be
missed, and takes itself off in a ``finally`` whether it was woken, timed out or raised:
the scheduler's lists hold only the waiters of threads still waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._claim import Waiter

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

__all__ = ["wait_finished"]


def wait_finished(
    life: Lifecycle,
    target: int,
    deadline: float | None,
    give_up: Callable[[], bool] | None = None,
) -> bool:
    """Block until ``target`` items have an outcome and their dead letters reached the sink.

    False at ``deadline`` (clock time). ``give_up`` is checked once a round: when it says
    so the wait ends early, returning False.
    """
    st = life.st
    sched = life.sched
    finished = life.outcomes.finished
    while finished() < target:
        waiter = Waiter()
        sched.add_waiter(sched.idle_waiters, waiter)
        try:
            if finished() >= target:
                break
            # After registering: whoever makes give_up true and then wakes the idle waiters
            # either finds this waiter or is seen here.
            if give_up is not None and give_up():
                return False
            remaining = None if deadline is None else deadline - st.now()
            if remaining is not None and remaining <= 0:
                return False
            life.clock.wait(waiter.lock, remaining)
        finally:
            sched.remove_waiter(sched.idle_waiters, waiter)
    remaining = None if deadline is None else max(0.0, deadline - st.now())
    return life.sink.wait_idle(remaining)
