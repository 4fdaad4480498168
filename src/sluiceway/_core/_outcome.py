"""Outcomes: every item ends processed or dead-lettered, exactly once, through here.

``processed`` and ``dead`` are the only places that count outcomes, give capacity back to
the item's lane and settle tracked submissions. Exactly once even against shutdown: the
handler-call helper (``_settle``) keeps each call's segment in a one-element box; whoever
pops it first (the caller when the handler returns, or shutdown at its timeout) decides the
outcome, and the other leaves it alone.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from .._records import DeadLetter, describe_error
from ._completion import Completion
from ._failure import Owners, Segment
from ._sink import Sink

if TYPE_CHECKING:
    from ._claim import Scheduler
    from ._shard import Shard
    from ._state import State

__all__ = ["Outcomes"]


class Outcomes:
    """Counts outcomes per lane, returns capacity, settles completions, files dead letters."""

    def __init__(self, st: State, sink: Sink, sched: Scheduler) -> None:
        self.st = st
        self.sink = sink
        self.sched = sched  # its room and idle waiters hear about capacity and outcomes
        n = len(st.shards)
        self.lock = threading.Lock()
        self.done = [0] * (n + 1)  # processed, by shard; the last entry is the priority lane
        self.dead_by_lane = [0] * (n + 1)
        self.by_reason: dict[str, int] = {}

    # -- counts (any thread) ------------------------------------------------------------------
    def finished(self) -> int:
        """Items (both lanes) processed or dead-lettered so far."""
        with self.lock:
            return sum(self.done) + sum(self.dead_by_lane)

    def counts(self) -> tuple[list[int], list[int], dict[str, int]]:
        """Processed and dead-lettered by lane, and dead-lettered by reason (a copy)."""
        with self.lock:
            return list(self.done), list(self.dead_by_lane), dict(self.by_reason)

    # -- outcomes ----------------------------------------------------------------------------
    def processed(self, shard: Shard | None, seg: Segment) -> None:
        """Every item of ``seg`` was handled by a call that returned."""
        n = len(seg.items)
        lane = len(self.done) - 1 if shard is None else shard.index
        with self.lock:
            self.done[lane] += n
        if seg.born is not None:
            self.st.h_e2e.observe(self.st.now() - seg.born, n)
        self._give_back(shard, n)
        _settle(seg.owners, processed=True)

    def priority_processed(self) -> None:
        """An untracked priority item was handled by a call that returned."""
        with self.lock:
            self.done[-1] += 1
        self._give_back(None, 1)

    def dead(
        self, shard: Shard | None, seg: Segment, reason: str, error: BaseException | None
    ) -> None:
        """Dead-letter every item of ``seg`` with ``reason``."""
        items = seg.items
        n = len(items)
        lane = len(self.done) - 1 if shard is None else shard.index
        etype, message, text = describe_error(error)
        stamp = time.time()
        index = None if shard is None else shard.index
        calls = seg.calls
        records = [
            DeadLetter(item, reason, etype, message, text, calls, index, stamp) for item in items
        ]
        self.sink.put(records)  # queued before counted: whoever sees the count waits for them
        with self.lock:
            self.dead_by_lane[lane] += n
            self.by_reason[reason] = self.by_reason.get(reason, 0) + n
        self._give_back(shard, n)
        _settle(seg.owners, processed=False)

    def _give_back(self, shard: Shard | None, count: int) -> None:
        st = self.st
        if shard is None:
            st.ptokens.give_back(None, count)
        elif st.pool is not None:
            slots = shard.slots
            assert slots is not None
            size = min(st.batch_sizes[shard.index], st.slot_max)
            st.pool.give_back_minted(count, slots.mint, size)
        else:
            shard.pool.give_back(None, count, shard.signal)
        sched = self.sched
        if sched.room_waiters or sched.idle_waiters:  # a truthiness test: no lock per batch
            sched.wake_waiters()


def _settle(owners: Owners, *, processed: bool) -> None:
    """Tell each tracked submission how many of its items reached this outcome."""
    if owners is None:
        return
    counts: dict[int, tuple[Completion, int]] = {}
    for c in owners:
        if c is not None:
            prev = counts.get(id(c))
            counts[id(c)] = (c, 1 if prev is None else prev[1] + 1)
    for c, n in counts.values():
        if processed:
            c._settle(n, 0)
        else:
            c._settle(0, n)
