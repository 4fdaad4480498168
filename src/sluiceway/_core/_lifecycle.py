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
from ._claim import Scheduler
from ._handle import Workers
from ._priority import PriorityLane
from ._ratelog import log
from ._settle import Settle
from ._slots import SKIP
from ._state import State
from ._stop import abandon
from ._threads import in_engine_thread
from ._tuning import hold, release
from ._waiters import wait_finished

__all__ = ["JOIN_GRACE", "Lifecycle"]

JOIN_GRACE = 1.0  # seconds to wait for threads after the drain, before calling them stuck
SINK_GRACE = 10.0  # seconds the dead-letter sink gets after a drain to take its records


class Lifecycle:
    """Start, shut down, report; safe for concurrent ``shutdown`` callers."""

    def __init__(
        self,
        st: State,
        sched: Scheduler,
        clock: Clock,
        settle: Settle,
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
        self.sched = sched
        self.clock = clock
        self.settle = settle
        self.outcomes = settle.outcomes
        self.sink = settle.outcomes.sink
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
            if self.st.auto is not None:
                self.st.auto.open()
            return True

    def _start_threads(self) -> None:
        self.started = True
        if self.uses_loop:
            self.host.start()
        self.workers.start()

    # -- guards --------------------------------------------------------------------------------
    def refuse_if_forked(self) -> None:
        """Raise ``Closed`` in a forked child: this pipeline's threads live in the parent."""
        if self.forked_from is not None:
            raise Closed(forked_message(self.forked_from))

    def on_engine_thread(self) -> bool:
        """True when called from one of this pipeline's own threads (a handler, a callback)."""
        return in_engine_thread(self.st)

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
        drained = wait_finished(self, self.accepted, deadline, self._finished)
        with self.finish_lock:
            if self.report is None:
                self.report = self._finish(drained, timeout)
        self.sched.wake_waiters()  # other callers still draining return the same report now
        return self.report

    def _finished(self) -> bool:
        return self.report is not None

    def _close(self) -> None:
        st = self.st
        st.closed = True
        self.sched.drain()  # before the pools close: cuts from here on are shutdown's
        if st.pool is not None:
            cleared = st.pool.close(self._close_slots)
            if cleared:  # unkeyed: their slots are complete with SKIP in their place
                st.skips.add(len(cleared))
                for token in cleared:
                    token(SKIP)  # type: ignore[operator]
        else:
            for pool in st.pools():
                pool.close()
        st.ptokens.close()
        self.sched.wake_waiters()
        if not self.started:
            self._start_threads()
        self.sched.wake_all()
        self.accepted = st.accepted()

    def _close_slots(self) -> None:
        for shard in self.st.shards:
            if shard.slots is not None:
                shard.slots.close()

    def _finish(self, drained: bool, timeout: float | None) -> DrainReport:
        st = self.st
        unfinished = 0
        if not drained:
            unfinished = abandon(st, self.sched, self.settle, self.lane, self.outcomes)
            log.warning(
                "shutdown timed out after %ss: %d unfinished items dead-lettered",
                timeout,
                unfinished,
                extra={"unfinished": unfinished},
            )
        self.sched.stop()
        stuck = self.workers.join(JOIN_GRACE if drained else 0.1)
        if stuck:
            log.error(
                "%d engine threads are stuck in a handler call and were left behind",
                stuck,
                extra={"stuck_threads": stuck},
            )
        else:
            self.host.stop()
        self.sink.stop(SINK_GRACE if drained else 0.1)
        release(self.tuning)
        self.tuning = None
        if self.st.auto is not None:
            self.st.auto.close()
        done, dead, _ = self.outcomes.counts()
        return DrainReport(
            accepted=self.accepted,
            processed=sum(done),
            dead_lettered=sum(dead),
            unfinished=unfinished,
            timed_out=not drained,
            stuck_threads=stuck,
            undelivered=len(self.sink.undelivered()) + self.sink.overflow,
        )


def forked_message(parent: int) -> str:
    """What a forked child is told when it uses its parent's pipeline."""
    return (
        f"this pipeline was created in the parent process (pid {parent}); its threads do not "
        "exist in this process: create a new Pipeline in the child"
    )
