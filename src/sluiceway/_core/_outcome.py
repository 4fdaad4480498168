"""Outcomes: a batch is processed or its items are dead-lettered, exactly once.

Exactly once even against shutdown: a batch in a handler sits in a one-element ``box``;
whoever pops it first (the worker when the handler returns, or shutdown when its timeout
expires) decides the batch's outcome, and the other leaves it alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._records import DeadLetter, describe_error
from ._batch import Marks
from ._shard import Shard
from ._slots import mint
from ._state import State

__all__ = ["Outcomes"]

DeadLetterSink = Callable[[list[DeadLetter]], object]
SINK_TRIES = 3
BACKLOG_MAX = 1_000_000
log = logging.getLogger("sluiceway")


class Outcomes:
    """Settles batches and priority items; owns the dead-letter sink."""

    def __init__(self, st: State, sink: DeadLetterSink) -> None:
        self.st = st
        self.sink = sink
        self.lock = threading.Lock()
        self.backlog: list[DeadLetter] = []  # records the sink refused, kept to retry
        self.overflow = 0  # records beyond BACKLOG_MAX while the sink kept failing
        self.sink_errors = 0
        self.by_reason: dict[str, int] = {}  # items dead-lettered, by reason
        self.listeners: list[DeadLetterSink] = []  # told after the sink (integrations)

    def release(self, shard: Shard, count: int) -> None:
        """Give ``count`` tokens back to the shard's lane and wake whoever waits on it."""
        st = self.st
        if st.pool is not None:
            size = min(shard.batch_size, shard.capacity)
            st.pool.give_back_minted(count, lambda n: mint(st, shard, n, size))
        else:
            assert shard.pool is not None
            shard.pool.give_back(None, count, shard.signal)
        if st.room_waiters or st.idle_waiters:
            with st.count_lock:
                st.wake_all(st.room_waiters)
                st.wake_all(st.idle_waiters)

    def dead_batch(
        self,
        shard: Shard | None,
        items: list[Any],
        marks: Marks | None,
        reason: str,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        """Dead-letter ``items`` of a shard's batch (or of the priority lane if shard is None)."""
        etype, message, text = describe_error(error)
        stamp = time.time()
        index = None if shard is None else shard.index
        records = [
            DeadLetter(item, reason, etype, message, text, attempts, index, stamp) for item in items
        ]
        self.deliver(records)
        for listener in self.listeners:
            try:
                listener(records)
            except Exception:
                log.exception("dead-letter listener failed")
        with self.lock:
            self.by_reason[reason] = self.by_reason.get(reason, 0) + len(items)
        if shard is None:
            with self.st.prio_lock:
                self.st.prio_dead += len(items)
        else:
            shard.dead += len(items)
        if marks:
            for completion, count in marks:
                completion._settle(0, count)

    def deliver(self, records: list[DeadLetter]) -> None:
        """Hand records to the sink, retrying it; as a last resort keep them in memory.

        Records kept are tried again with the next delivery and reported by ``stats()`` and
        the drain report (``undelivered``); past ``BACKLOG_MAX`` the oldest are counted in
        ``overflow`` and logged, never dropped without a trace.
        """
        with self.lock:
            if self.backlog:
                records = self.backlog + records
                self.backlog = []
        for _ in range(SINK_TRIES):
            try:
                self.sink(records)
            except Exception:  # noqa: BLE001 - a broken sink must not take the engine down
                self.sink_errors += 1
            else:
                return
        with self.lock:
            self.backlog.extend(records)
            excess = len(self.backlog) - BACKLOG_MAX
            if excess > 0:
                del self.backlog[:excess]
                self.overflow += excess
                log.error("dead-letter sink failing: %d records could not be kept", excess)

    def undelivered(self) -> list[DeadLetter]:
        """Records the sink has refused so far (kept in memory)."""
        with self.lock:
            return list(self.backlog)
