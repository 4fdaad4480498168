"""The priority lane: its own bounded queue and thread, one item per handler call.

Priority items never wait behind regular batches: a dedicated thread serves them, and every
worker also serves pending priority items before it starts its next batch, so whichever
thread holds the GIL next picks them up. The dedicated thread is woken only when no worker
is awake between batches (one that is serves the item before its next batch, which is
sooner than a woken thread could get the GIL); waking it for every priority item would cost
a thread switch each. Under a saturating load the remaining wait is the
interpreter's thread switch interval (5 ms by default; see ``Pipeline(switch_interval=)``).
"""

from __future__ import annotations

from typing import Any

from ._outcome import Outcomes
from ._state import State

__all__ = ["PriorityLane"]


class PriorityLane:
    """Admission and service of priority items."""

    def __init__(self, st: State, outcomes: Outcomes) -> None:
        self.st = st
        self.outcomes = outcomes
        cfg = st.cfg
        if cfg.priority_handler is not None:
            self.handle = cfg.priority_handler
        else:
            batch_handler = cfg.handler

            def handle(item: Any) -> object:
                return batch_handler([item])

            self.handle = handle
        self.boxes: set[int] = set()
        self.inflight: dict[int, list[tuple[Any, float, Any]]] = {}

    def submit(self, item: Any) -> bool:
        """Admit one priority item, or refuse it at once."""
        st = self.st
        try:
            st.ptokens.take()
        except IndexError:
            with st.count_lock:
                st.prio_refused += 1
            return False
        st.pq.append((item, st.now(), None))
        if st.prio_parked and (st.io_bound or 1 not in st.ready):
            st.prio_parked = False
            st.prio_waiter.wake()
        return True

    def serve(self) -> None:
        """Handle every pending priority item (called by the lane's thread and by workers)."""
        st = self.st
        pop = st.pq.popleft
        now = st.now
        handle = self.handle
        latencies = st.latencies
        inflight = self.inflight
        while True:
            try:
                entry = pop()
            except IndexError:
                return
            item, submitted, completion = entry
            start = now()
            latencies.append(start - submitted)
            box = [entry]
            key = id(box)
            inflight[key] = box
            try:
                handle(item)
            except BaseException as exc:  # noqa: BLE001 - a failing handler is an outcome, not a crash
                error: BaseException | None = exc
            else:
                error = None
            del inflight[key]
            try:
                box.pop()
            except IndexError:  # shutdown already dead-lettered it
                continue
            self.settle(item, completion, error)

    def settle(self, item: Any, completion: Any, error: BaseException | None) -> None:
        """Record one priority item's outcome and give its token back."""
        st = self.st
        if error is None:
            with st.prio_lock:
                st.prio_done += 1
            if completion is not None:
                completion._settle(1, 0)
        else:
            marks = None if completion is None else [(completion, 1)]
            self.outcomes.dead_batch(None, [item], marks, "handler-error", error, attempts=1)
        st.ptokens.give_back(None, 1)
        if st.room_waiters or st.idle_waiters:
            with st.count_lock:
                st.wake_all(st.room_waiters)
                st.wake_all(st.idle_waiters)

    def run_thread(self) -> None:
        """The lane's own thread: serve, then sleep until a priority item arrives."""
        st = self.st
        waiter = st.prio_waiter
        while True:
            self.serve()
            if st.stopping:
                return
            st.prio_parked = True
            if st.pq or st.stopping:
                st.prio_parked = False
                continue
            st.clock.wait(waiter.lock, None)
            st.prio_parked = False
