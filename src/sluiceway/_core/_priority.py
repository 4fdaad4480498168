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

import heapq
import threading
from typing import Any

from .._policy import Retry
from ._outcome import Outcomes
from ._state import State

__all__ = ["PriorityLane"]


class PriorityLane:
    """Admission and service of priority items."""

    def __init__(self, st: State, outcomes: Outcomes, retry: Retry | None = None) -> None:
        self.st = st
        self.outcomes = outcomes
        self.retry = retry
        self.retries: list[tuple[float, int, tuple[Any, float, Any], int]] = []  # a heap
        self.retry_lock = threading.Lock()
        self.seq = 0
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
        if self.retries:
            self._serve_retries()
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
            item, submitted, _ = entry
            start = now()
            latencies.append(start - submitted)
            st.h_priority.observe(start - submitted)
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
            self.settle(entry, error, 1)

    def _serve_retries(self) -> None:
        now = self.st.now()
        while True:
            with self.retry_lock:
                if not self.retries or self.retries[0][0] > now:
                    return
                _, _, entry, calls = heapq.heappop(self.retries)
            try:
                self.handle(entry[0])
            except BaseException as exc:  # noqa: BLE001 - a failing handler is an outcome, not a crash
                self.settle(entry, exc, calls + 1)
            else:
                self.settle(entry, None, calls + 1)

    def next_retry(self) -> float | None:
        """When the earliest priority retry is due, if any."""
        with self.retry_lock:
            return self.retries[0][0] if self.retries else None

    def settle(
        self, entry: tuple[Any, float, Any], error: BaseException | None, calls: int
    ) -> None:
        """Record one priority item's outcome (or schedule its retry); give its token back."""
        st = self.st
        item, _, completion = entry
        retry = self.retry
        if error is None:
            with st.prio_lock:
                st.prio_done += 1
            if completion is not None:
                completion._settle(1, 0)
        elif retry is not None and retry.retryable(error) and calls < retry.attempts:
            with self.retry_lock:
                self.seq += 1
                due = st.now() + retry.delay(calls)
                heapq.heappush(self.retries, (due, self.seq, entry, calls))
            if st.prio_parked:
                st.prio_parked = False
                st.prio_waiter.wake()  # its sleep must now end at the retry's due time
            return
        else:
            if retry is None:
                reason = "handler-error"
            else:
                reason = "retries-exhausted" if retry.retryable(error) else "permanent"
            marks = None if completion is None else [(completion, 1)]
            self.outcomes.dead_batch(None, [item], marks, reason, error, attempts=calls)
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
            due = self.next_retry()
            st.clock.wait(waiter.lock, None if due is None else due - st.now())
            st.prio_parked = False
