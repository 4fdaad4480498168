"""The dead-letter sink's own thread: user sinks never run on an engine thread.

Records are queued (``put``) by whoever decides a dead-letter outcome and delivered by one
thread, started on the first record. A sink that raises anything is retried, then its
records are kept in memory (``undelivered``) and tried again with the next delivery; a sink
that blocks delays only this thread, never a worker, the priority lane or a shutdown
timeout. This thread is the only caller of the sink and of the listeners.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .._records import DeadLetter
from ._ratelog import log
from ._threads import mark_engine_thread

__all__ = ["Sink"]

DeadLetterSink = Callable[[list[DeadLetter]], object]
TRIES = 3
BACKLOG_MAX = 1_000_000


class Sink:
    """Delivers dead-letter records to the user's sink, off the engine's threads."""

    def __init__(self, sink: DeadLetterSink, owner: object) -> None:
        self.sink = sink
        self.owner = owner  # the pipeline's State: this thread is one of its engine threads
        self.listeners: list[DeadLetterSink] = []  # told after the sink (integrations)
        self.queue: deque[list[DeadLetter]] = deque()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.backlog: list[DeadLetter] = []  # records the sink refused, kept to retry
        self.overflow = 0  # records beyond BACKLOG_MAX while the sink kept failing
        self.errors = 0  # sink calls that raised
        self.busy = 0  # record lists taken by the thread and not yet delivered or kept
        self.thread: threading.Thread | None = None
        self.stopping = False

    def put(self, records: list[DeadLetter]) -> None:
        """Queue records for delivery (never blocks on the sink)."""
        with self.lock:
            self.queue.append(records)
            if self.thread is None and not self.stopping:
                self.thread = threading.Thread(
                    target=self._run, name="sluiceway-dead-letters", daemon=True
                )
                self.thread.start()
            self.changed.notify_all()

    def idle(self) -> bool:
        """Nothing queued or being delivered."""
        return not self.queue and not self.busy

    def wait_idle(self, timeout: float | None) -> bool:
        """Block (real time) until every queued record was delivered or kept; False on timeout."""
        with self.changed:
            return self.changed.wait_for(self.idle, timeout)

    def stop(self, timeout: float | None) -> None:
        """Deliver what is queued within ``timeout``, then let the thread end."""
        self.wait_idle(timeout)
        with self.changed:
            self.stopping = True
            self.changed.notify_all()
            # Whatever a blocked sink has not taken yet is kept, and reported undelivered.
            while self.queue:
                self.backlog.extend(self.queue.popleft())
            thread = self.thread
        if thread is not None:
            thread.join(0.5 if timeout is None else min(timeout, 0.5))

    def undelivered(self) -> list[DeadLetter]:
        """Records the sink has refused (or not yet taken at a shutdown timeout)."""
        with self.lock:
            return list(self.backlog)

    def _run(self) -> None:
        mark_engine_thread(self.owner)
        while True:
            with self.changed:
                while not self.queue and not self.stopping:
                    self.changed.wait()
                if not self.queue:
                    return
                records: list[DeadLetter] = []
                while self.queue:
                    records.extend(self.queue.popleft())
                if self.backlog:
                    records = self.backlog + records
                    self.backlog = []
                self.busy += 1
            try:
                self._deliver(records)
            finally:
                with self.changed:
                    self.busy -= 1
                    self.changed.notify_all()

    def _deliver(self, records: list[DeadLetter]) -> None:
        last: BaseException | None = None
        for _ in range(TRIES):
            try:
                self.sink(list(records))  # a copy each try: the sink may change its list
            except BaseException as exc:  # noqa: BLE001 - a broken sink must not take the engine down
                self.errors += 1
                last = exc
            else:
                break
        else:
            log.error(
                "dead-letter sink failed %d times; keeping %d records in memory",
                TRIES,
                len(records),
                exc_info=last,
                extra={"records": len(records)},
            )
            self._keep(records)
        for listener in self.listeners:
            try:
                listener(list(records))
            except BaseException:  # noqa: BLE001 - logged: an engine thread must not die
                log.exception("dead-letter listener failed")

    def _keep(self, records: list[DeadLetter]) -> None:
        with self.lock:
            self.backlog.extend(records)
            excess = len(self.backlog) - BACKLOG_MAX
            if excess > 0:
                del self.backlog[:excess]
                self.overflow += excess
                log.error("dead-letter sink failing: %d records could not be kept", excess)
