"""A shard: the unit of ordering. One batch of a shard is in a handler at a time.

An unkeyed shard has one queue. A keyed pipeline hashes keys into many virtual partitions,
each with its own queue, and a shard serves the partitions it owns; moving a partition moves
its whole queue, so per-key order survives rebalancing.

Queues hold items, or ``Chunk`` elements for tracked submissions (``submit_many(...,
on_done=...)``). ``chunks`` counts them so that the batch cutter takes the element-by-element
path only while a chunk is queued: untracked traffic pays nothing for tracking.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ._completion import Completion
from ._slots import Slot
from ._tokens import TokenPool

__all__ = ["FLUSH_MANUAL", "FLUSH_SHUTDOWN", "FLUSH_SIZE", "FLUSH_TIME", "RETRY", "Chunk", "Shard"]

FLUSH_SIZE, FLUSH_TIME, FLUSH_MANUAL, FLUSH_SHUTDOWN, RETRY = range(5)


class Chunk:
    """A run of consecutive items of one tracked submission, queued as one element."""

    __slots__ = ("completion", "items")

    def __init__(self, items: list[Any], completion: Completion) -> None:
        self.items = items
        self.completion = completion


class Shard:
    """Queues plus the batching, retry and bookkeeping state of one shard.

    Fields that change per batch are written only by the worker holding the shard
    (``busy``), so they need no lock; ``lock`` guards only the chunk counters, which
    producers of tracked submissions also touch.
    """

    __slots__ = (
        "batch_ema",
        "batch_size",
        "batches",
        "box",
        "breaker",
        "busy",
        "capacity",
        "chunk_extra",
        "chunks",
        "cursor",
        "dead",
        "first_seen",
        "flush_requested",
        "flushes",
        "flushes_seen",
        "free",
        "give",
        "index",
        "lock",
        "minted",
        "minting",
        "moved_in",
        "moved_out",
        "parts",
        "pending",
        "pool",
        "processed",
        "signal",
        "slots",
        "steals_in",
        "steals_out",
        "token",
    )

    def __init__(self, index: int, capacity: int, batch_size: int = 64) -> None:
        self.index = index
        self.batch_size = batch_size  # this shard's current batch size (see _balance)
        self.batch_ema = 0.0  # moving average of its handler calls' duration
        self.flushes_seen = (0, 0)  # size and time flushes at the last balancing step
        self.capacity = capacity
        self.parts: list[deque[Any]] = []
        self.slots: deque[Slot] = deque()  # unkeyed: batches being filled, oldest first
        self.minting: Slot | None = None  # the slot still getting tokens (see _slots.mint)
        self.minted = 0  # tokens minted for it so far
        self.pool: TokenPool | None = None  # keyed pipelines: this shard's own pool
        self.token: object = None  # what a finished item of this shard returns to the pool
        self.signal: object = None  # ... and once a batch, this signalling token
        self.busy = False
        self.free = [True]  # popped to claim the shard, appended to release it
        self.box: list[Any] | None = None  # the batch in the handler; see _outcome
        self.first_seen: float | None = None  # when the oldest queued item was first seen
        self.flush_requested = False
        self.chunks = 0  # Chunk elements queued
        self.chunk_extra = 0  # items inside queued chunks beyond one per element
        self.cursor = 0  # next partition to cut from (fairness among partitions)
        self.processed = 0
        self.dead = 0
        self.batches = 0
        self.flushes = [0, 0, 0, 0]
        self.lock = threading.Lock()
        self.pending: deque[Any] = deque()  # failed segments to retry first (see _failure)
        self.breaker: Any = None  # a _failure.BreakerState when the pipeline has a Breaker
        self.give: Any = None  # a planned steal: (taker shard, items), see _balance
        self.steals_out = self.steals_in = self.moved_out = self.moved_in = 0

    def release(self) -> None:
        """Let another worker claim this shard."""
        self.busy = False
        self.free.append(True)

    def depth(self) -> int:
        """Items queued (not yet cut into a batch); unkeyed, an estimate from the head."""
        parts = self.parts
        if len(parts) == 1:
            depth = len(parts[0]) + self.chunk_extra
        else:
            depth = sum(map(len, parts)) + self.chunk_extra
        slots = self.slots
        if slots:
            head = slots[0]
            depth += len(head.items) - head.offset
            if len(slots) > 1:
                depth += len(slots[1].items)
        return depth

    def backlog(self) -> int:
        """Items queued, counted exactly (slower than ``depth``: for balancing and stats)."""
        if not self.slots:
            return self.depth()
        parts = self.parts
        queued = sum(map(len, parts)) + self.chunk_extra
        for slot in list(self.slots):
            n = len(slot.items)
            if not n:
                break
            queued += n - slot.offset
        return queued

    def full(self) -> bool:
        """A whole batch can be cut now (unkeyed: the oldest slot is complete)."""
        slots = self.slots
        return bool(slots) and len(slots[0].items) >= slots[0].size

    def add_chunk(self, part: deque[Any], chunk: Chunk) -> None:
        """Queue a tracked run of items (producer side)."""
        with self.lock:  # counters first, so a cutter that sees the element sees the count
            self.chunks += 1
            self.chunk_extra += len(chunk.items) - 1
        part.append(chunk)
