"""Giving up at a shutdown timeout: dead-letter whatever is still queued or in a handler.

Each handler call's segment sits in a one-element box (``_settle``); popping it is atomic,
so either the caller (its handler returned) or this code (the timeout came first) settles
it, never both. A handler that returns later finds the box empty and leaves the outcome
alone. Queues are taken with atomic pops, so an item a worker was cutting at that moment
goes either into its batch (and the batch's box) or into a dead letter here.
"""

from __future__ import annotations

import time
from typing import Any

from ._batch import _cut_tracked, drain_all
from ._claim import Scheduler
from ._failure import Segment, owners_of
from ._outcome import Outcomes
from ._priority import PriorityLane
from ._settle import Settle
from ._shard import Part
from ._state import State

__all__ = ["abandon"]

REASON = "shutdown-timeout"
ROUNDS = 20  # a worker that was cutting a batch as we started has registered it by then
PAUSE = 0.001  # real seconds between rounds while something is unaccounted for


def abandon(
    st: State, sched: Scheduler, settle: Settle, lane: PriorityLane, outcomes: Outcomes
) -> int:
    """Dead-letter every unfinished item; return how many there were."""
    sched.stop()  # no lease is granted from here on
    total = 0
    for _ in range(ROUNDS):
        found = 0
        for shard, seg in settle.abandon():
            outcomes.dead(shard, seg, REASON, None)
            found += len(seg.items)
        for shard in st.shards:
            while shard.pending:
                found += _dead(outcomes, shard, _pop(shard.pending))
            while shard.inbox:
                element, _ = _pop(shard.inbox) or (None, None)
                if isinstance(element, Part):
                    items, marks = _cut_tracked([element], 1 << 62)
                    element = Segment(items, owners_of(marks, len(items)))
                found += _dead(outcomes, shard, element)
            items, marks = drain_all(shard)
            found += _dead(outcomes, shard, Segment(items, owners_of(marks, len(items))))
        for seg in lane.take_retries():
            found += _dead(outcomes, None, seg)
        while st.pq:
            entry = _pop(st.pq)
            if entry is not None:
                item, _, completion = entry
                found += _dead(outcomes, None, Segment([item], owners_of_one(completion)))
        total += found
        if not found:
            if outcomes.finished() >= st.accepted():
                break
            time.sleep(PAUSE)
    return total


def owners_of_one(completion: Any) -> list[Any] | None:
    """The owners list of a single (maybe tracked) item."""
    return None if completion is None else [completion]


def _pop(queue: Any) -> Any:
    try:
        return queue.popleft()
    except IndexError:
        return None


def _dead(outcomes: Outcomes, shard: Any, seg: Segment | None) -> int:
    if seg is None or not seg.items:
        return 0
    outcomes.dead(shard, seg, REASON, None)
    return len(seg.items)
