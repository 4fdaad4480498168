"""Room and idle waiters: a thread that gives up waiting takes its waiter with it."""

from __future__ import annotations

from ._state import State, Waiter

__all__ = ["forget"]


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
