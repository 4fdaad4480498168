"""Room and idle waiters: a thread that gives up waiting takes its waiter with it."""

from __future__ import annotations

from collections.abc import Callable

from .._clock import Clock
from ._state import State, Waiter

__all__ = ["forget", "wait_finished"]


def forget(st: State, waiters: list[Waiter], waiter: Waiter) -> None:
    """Remove ``waiter`` from ``waiters`` (if a waker has not already taken it).

    Called in a ``finally`` by every ``put``/``aput``/``wait_idle`` round, whether it was
    woken, timed out or raised: a list holds only the waiters of threads still waiting, so
    its length is bounded by them (asyncio's queues clean their putters the same way).
    Under ``st.count_lock``, as waiters are added and woken.
    """
    with st.count_lock:
        try:
            waiters.remove(waiter)
        except ValueError:  # woken: wake_all already took the whole list
            pass


def wait_finished(
    st: State,
    clock: Clock,
    target: int,
    deadline: float | None,
    give_up: Callable[[], bool] | None = None,
) -> bool:
    """Block until ``target`` items are finished; False at ``deadline`` (clock time).

    ``give_up`` is checked once a round (after each wake-up): when it says so the wait ends
    early, returning whether the target was met.
    """
    while st.finished() < target:
        waiter = Waiter()
        with st.count_lock:
            st.idle_waiters.append(waiter)
        try:
            if st.finished() >= target:
                break
            # After the append: whoever makes give_up true and then wakes the idle waiters
            # (under count_lock) either finds this waiter or is seen here.
            if give_up is not None and give_up():
                return False
            remaining = None if deadline is None else deadline - st.now()
            if remaining is not None and remaining <= 0:
                return False
            clock.wait(waiter.lock, remaining)
        finally:
            forget(st, st.idle_waiters, waiter)
    return True
