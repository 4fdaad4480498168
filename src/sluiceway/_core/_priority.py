"""The priority lane: its own bounded queue and thread, one item per handler call.

Priority items never wait behind regular batches: a dedicated thread serves them, and every
worker also serves pending priority items before it starts its next batch, so whichever
thread holds the GIL next picks them up. The dedicated thread is woken only when no worker
is awake between batches (``State.ready``: one that is serves the item before its next
batch, which is sooner than a woken thread could get the GIL). Under a saturating load the
remaining wait is the interpreter's thread switch interval: by default
(``switch_interval="auto"``) the pipeline holds a short one while it is busy, and the
lane's thread gives it back after a quiet second (``_interval``).

Calls and retries go through ``_settle`` like every other handler call, so a retry that is
running when shutdown gives up is dead-lettered like any batch in a handler.
"""

from __future__ import annotations

import heapq
import threading
from typing import Any

from ._failure import Segment
from ._settle import ABANDONED, Settle
from ._state import State

__all__ = ["POLL", "PriorityLane"]

POLL = 0.001  # seconds between the lane's looks at its queue while regular work is in flight
INF = float("inf")


class PriorityLane:
    """Admission and service of priority items."""

    def __init__(self, st: State, settle: Settle) -> None:
        self.st = st
        self.settle = settle
        self.retries: list[tuple[float, int, Segment]] = []  # a heap by due time
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

    def submit(self, item: Any) -> bool:
        """Admit one priority item, or refuse it at once."""
        st = self.st
        try:
            st.ptokens.take()
        except IndexError:
            st.refuse(1, priority=True)
            return False
        st.pq.append((item, st.now(), None))
        st.priority_queued()
        return True

    def serve(self) -> None:
        """Handle every pending priority item (called by the lane's thread and by workers).

        An untracked item whose call returned is counted (and its capacity given back) at
        once, without the general settling: a later call may block for as long as it likes.
        """
        if self.retries:
            self._serve_retries()
        st = self.st
        pq = st.pq
        if not pq:
            return
        pop = pq.popleft
        now = st.now
        call = self.settle.call
        handle = self.handle
        processed = self.settle.outcomes.priority_processed
        waits: list[float] = []
        try:
            while True:
                try:
                    item, submitted, completion = pop()
                except IndexError:
                    return
                waits.append(now() - submitted)
                if completion is not None:
                    self._run(Segment([item], [completion]))
                    continue
                seg = Segment([item])
                error = call(handle, item, None, seg)
                if error is None:
                    processed()
                elif error is not ABANDONED:
                    self._failed(seg, error)
        finally:
            if waits:
                st.latencies.extend(waits)
                st.h_priority.observe_many(waits)

    def _run(self, seg: Segment) -> None:
        error = self.settle.call(self.handle, seg.items[0], None, seg)
        if error is ABANDONED:
            return
        if error is None:
            self.settle.settle(None, seg, None, self.st.now())
        else:
            self._failed(seg, error)

    def _failed(self, seg: Segment, error: BaseException) -> None:
        again = self.settle.settle(None, seg, error, self.st.now())
        if again:
            with self.retry_lock:
                for piece in again:
                    self.seq += 1
                    heapq.heappush(self.retries, (piece.not_before, self.seq, piece))
            if self.st.prio_parked:
                self.st.wake_lane()  # its sleep must now end at the retry's due time

    def _serve_retries(self) -> None:
        now = self.st.now()
        while True:
            with self.retry_lock:
                if not self.retries or self.retries[0][0] > now:
                    return
                _, _, seg = heapq.heappop(self.retries)
            self._run(seg)

    def next_retry(self) -> float | None:
        """When the earliest priority retry is due, if any."""
        with self.retry_lock:
            return self.retries[0][0] if self.retries else None

    def take_retries(self) -> list[Segment]:
        """Every retry waiting (shutdown gave up waiting)."""
        with self.retry_lock:
            taken, self.retries = self.retries, []
        return [seg for _, _, seg in taken]

    def run_thread(self) -> None:
        """The lane's own thread: serve, then sleep until a priority item arrives."""
        st = self.st
        waiter = st.prio_waiter
        auto = st.auto
        while True:
            self.serve()
            if st.stopping:
                return
            quiet = None if auto is None else auto.tick()
            due = self.next_retry()
            # While regular work is in flight, producers do not wake this thread for each
            # priority item (a thread switch each): it looks every POLL seconds, and a
            # worker that finishes its call serves the items first anyway.
            st.prio_polling = polling = due is None and not st.io_bound and st.regular_in_flight()
            st.prio_parked = True
            if st.pq or st.stopping:
                st.prio_parked = False
                continue
            if due is not None:
                # On the pipeline's clock; no later than the auto interval's next check
                # (real seconds: the same as clock seconds unless a test injected a clock).
                timeout = due - st.now()
                st.clock.wait(waiter.lock, timeout if quiet is None else min(timeout, quiet))
            elif polling or quiet is not None:
                # Real time, like the switch interval and the GIL's hand-overs.
                timeout = min(POLL if polling else INF, INF if quiet is None else quiet)
                waiter.lock.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
            else:
                st.clock.wait(waiter.lock, None)
            st.prio_parked = False
