"""Giving up at a shutdown timeout: dead-letter whatever is still queued or in a handler.

Each batch in a handler sits in a one-element box; popping it is atomic, so either the
worker (its handler returned) or this code (the timeout came first) settles it, never both.
A handler that returns later finds the box empty and leaves the outcome alone.
"""

from __future__ import annotations

from ._batch import drain_all
from ._outcome import Outcomes
from ._priority import PriorityLane
from ._state import State

__all__ = ["abandon"]

REASON = "shutdown-timeout"
ROUNDS = 3  # a worker that was cutting a batch as we started finishes within a round


def abandon(st: State, outcomes: Outcomes, lane: PriorityLane) -> int:
    """Dead-letter every unfinished item; return how many there were."""
    st.stopping = True  # workers claim no new batch from here on
    total = 0
    for _ in range(ROUNDS):
        found = 0
        for shard in st.shards:
            box = shard.box
            if box is not None:
                try:
                    items, marks, owners = box.pop()
                except IndexError:
                    pass
                else:
                    if owners is not None:
                        marks = [(c, 1) for c in owners if c is not None]
                    outcomes.dead_batch(shard, items, marks, REASON, None, attempts=1)
                    found += len(items)
            while shard.pending:
                try:
                    seg = shard.pending.popleft()
                except IndexError:
                    break
                marks = None
                if seg.owners is not None:
                    marks = [(c, 1) for c in seg.owners if c is not None]
                outcomes.dead_batch(shard, seg.items, marks, REASON, None, seg.calls)
                found += len(seg.items)
            items, marks = drain_all(st, shard)
            if items:
                outcomes.dead_batch(shard, items, marks, REASON, None, attempts=0)
                found += len(items)
        for box in list(lane.inflight.values()):
            try:
                item, _, completion = box.pop()
            except IndexError:
                continue
            marks = None if completion is None else [(completion, 1)]
            outcomes.dead_batch(None, [item], marks, REASON, None, attempts=1)
            found += 1
        with lane.retry_lock:
            retries, lane.retries = lane.retries, []
        for _, _, (item, _, completion), calls in retries:
            marks = None if completion is None else [(completion, 1)]
            outcomes.dead_batch(None, [item], marks, REASON, None, attempts=calls)
            found += 1
        while st.pq:
            try:
                item, _, completion = st.pq.popleft()
            except IndexError:
                break
            marks = None if completion is None else [(completion, 1)]
            outcomes.dead_batch(None, [item], marks, REASON, None, attempts=0)
            found += 1
        total += found
        if not found and st.finished() >= st.accepted():
            break
    return total
