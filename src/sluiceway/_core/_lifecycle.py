"""Starting and stopping one pipeline's engine: the threads, the drain, the report.

A ``Lifecycle`` holds the engine's parts but not the ``Pipeline`` object, so that a
dropped pipeline can be noticed (``weakref.finalize``, see ``_orphans``) and still be shut
down. Shutdown has three steps:

1. *close* (once, under ``lock``): refuse new items, wake everyone, start the threads if
   they never ran;
2. *drain* (every caller, no lock held): wait for every accepted item, each caller until
   its own deadline;
3. *finish* (once, under ``finish_lock``): the first caller to get here dead-letters what is
   unfinished (only if its wait ran out), stops the threads and writes the report, which
   every caller then returns.
"""

from __future__ import annotations

import os
import threading

from .._clock import Clock
from .._errors import Closed, SluicewayError
from .._records import DrainReport
from ._aio import LoopHost
from ._handle import Workers
from ._outcome import Outcomes
from ._priority import PriorityLane
from ._slots import SKIP, close_minting
from ._state import State
from ._stop import abandon
from ._threads import in_engine_thread
from ._tuning import hold, release
from ._waiters import wait_finished

__all__ = ["JOIN_GRACE", "Lifecycle"]

JOIN_GRACE = 1.0  # seconds to wait for threads after the drain, before calling them stuck


class Lifecycle:
    """Start, shut down, report; safe for concurrent ``shutdown`` callers."""

    def __init__(
        self,
        st: State,
        clock: Clock,
        outcomes: Outcomes,
        lane: PriorityLane,
        workers: Workers,
        host: LoopHost,
        *,
        uses_loop: bool,
        switch_interval: float | None,
        gc_threshold: int | None,
        drain_timeout: float | None,
    ) -> None:
        self.st = st
        self.clock = clock
        self.outcomes = outcomes
        self.lane = lane
        self.workers = workers
        self.host = host
        self.uses_loop = uses_loop
        self.switch_interval = switch_interval
        self.gc_threshold = gc_threshold
        self.drain_timeout = drain_timeout
        self.pid = os.getpid()
        self.forked_from: int | None = None  # set in a forked child (see _orphans)
        self.lock = threading.Lock()  # start and close
        self.finish_lock = threading.Lock()  # the finish step
        self.started = False
        self.closing = False
        self.accepted = 0  # fixed when closing
        self.threads: frozenset[threading.Thread] = frozenset()
        self.tuning: int | None = None  # this pipeline's ticket in _tuning
        self.report: DrainReport | None = None

    # -- start -------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the threads; True if this call started them."""
        self.refuse_if_forked()
        with self.lock:
            if self.report is not None or self.closing or self.st.closed:
                raise Closed("a pipeline cannot be restarted after shutdown")
            if self.started:
                return False
            self.tuning = hold(self.switch_interval, self.gc_threshold)
            self._start_threads()
            return True

    def _start_threads(self) -> None:
        self.started = True
        if self.uses_loop:
            self.host.start()
        self.workers.start()
        # Until every engine thread calls mark_engine_thread(st) itself (see _threads).
        self.threads = frozenset(self.workers.threads)

    # -- guards --------------------------------------------------------------------------------
    def refuse_if_forked(self) -> None:
        """Raise ``Closed`` in a forked child: this pipeline's threads live in the parent."""
        if self.forked_from is not None:
            raise Closed(forked_message(self.forked_from))

    def on_engine_thread(self) -> bool:
        """True when called from one of this pipeline's own threads (a handler, a callback)."""
        return threading.current_thread() in self.threads or in_engine_thread(self.st)

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self, timeout: float | None) -> DrainReport:
        """Close, drain until ``timeout`` (this caller's own), finish; see the module doc."""
        if self.report is not None:
            return self.report
        if self.forked_from is not None:  # nothing of the parent's runs here: nothing to do
            return DrainReport(0, 0, 0, 0, timed_out=False)
        if self.on_engine_thread():
            raise SluicewayError(
                "shutdown() was called on one of the pipeline's own threads (from a handler, "
                "an on_done callback or a dead-letter sink); it would wait for itself. Call "
                "it from outside the handler, e.g. set a flag the thread that owns the "
                "pipeline checks"
            )
        st = self.st
        deadline = None if timeout is None else st.now() + timeout
        with self.lock:
            if self.report is not None:
                return self.report
            if not self.closing:
                self.closing = True
                self._close()
        drained = wait_finished(st, self.clock, self.accepted, deadline, self._finished)
        with self.finish_lock:
            if self.report is None:
                self.report = self._finish(drained)
        with st.count_lock:  # other callers still draining return the same report now
            st.wake_all(st.idle_waiters)
        return self.report

    def _finished(self) -> bool:
        return self.report is not None

    def _close(self) -> None:
        st = self.st
        st.closed = True
        if st.pool is not None:
            cleared = st.pool.close(lambda: _close_minting(st))
        else:
            cleared = [t for pool in st.pools() for t in pool.close()]
        if st.pool is not None and cleared:  # unkeyed: fill their slots with SKIP
            with st.count_lock:
                st.skips += len(cleared)
            for token in cleared:
                token(SKIP)  # type: ignore[operator]
        st.ptokens.close()
        st.draining = True
        with st.count_lock:
            st.wake_all(st.room_waiters)
        if not self.started:
            self._start_threads()
        self.workers.wake_all()
        self.accepted = st.accepted()

    def _finish(self, drained: bool) -> DrainReport:
        st = self.st
        unfinished = 0 if drained else abandon(st, self.outcomes, self.lane)
        st.stopping = True
        self.workers.wake_all()
        stuck = self.workers.join(JOIN_GRACE if drained else 0.1)
        if not stuck:
            self.host.stop()
        release(self.tuning)
        self.tuning = None
        processed = st.prio_done + sum(s.processed for s in st.shards)
        dead = st.prio_dead + sum(s.dead for s in st.shards)
        return DrainReport(
            accepted=self.accepted,
            processed=processed,
            dead_lettered=dead,
            unfinished=unfinished,
            timed_out=not drained,
            stuck_threads=stuck,
            undelivered=len(self.outcomes.undelivered()) + self.outcomes.overflow,
        )


def forked_message(parent: int) -> str:
    """What a forked child is told when it uses its parent's pipeline."""
    return (
        f"this pipeline was created in the parent process (pid {parent}); its threads do not "
        "exist in this process: create a new Pipeline in the child"
    )


def _close_minting(st: State) -> None:
    for shard in st.shards:
        close_minting(shard)
