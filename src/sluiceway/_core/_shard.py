"""A shard: the unit of ordering. One batch of a shard is in a handler at a time.

An unkeyed shard has one queue of tracked chunks and its slots (see ``_slots``). A keyed
pipeline hashes keys into many virtual partitions (:class:`Part`), each with its own queue;
a shard serves the partitions it owns, and moving a partition moves its whole queue, so
per-key order survives rebalancing.

Ownership (see docs/design.md): whoever holds the shard's lease (``_claim``) is the only
thread that pops its queues, cuts its slots, changes ``parts`` and ``pending`` and counts
its batches. Other threads hand work to a shard through ``inbox``, which only the holder
drains.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from ._completion import Completion

if TYPE_CHECKING:
    from ._slots import Slots

__all__ = [
    "FLUSH_MANUAL",
    "FLUSH_SHUTDOWN",
    "FLUSH_SIZE",
    "FLUSH_TIME",
    "RETRY",
    "Chunk",
    "Part",
    "Shard",
]

FLUSH_SIZE, FLUSH_TIME, FLUSH_MANUAL, FLUSH_SHUTDOWN, RETRY = range(5)

CHUNK_LOCK = threading.Lock()
"""Guards every ``Part``'s chunk counters (tracked submissions only; never per item)."""


class Chunk:
    """A run of consecutive items of one tracked submission, queued as one element."""

    __slots__ = ("completion", "items")

    def __init__(self, items: list[Any], completion: Completion) -> None:
        self.items = items
        self.completion = completion


class Part:
    """One queue and the count of the ``Chunk`` elements in it.

    The counters travel with the queue when a partition moves to another shard, so a
    producer that counted a chunk just before the move counted it where the cutter looks.
    Invariant: ``chunks`` is at least the number of ``Chunk`` elements in ``queue``
    (producers count before they append; the holder uncounts after it pops).
    """

    __slots__ = ("chunks", "extra", "index", "queue")

    def __init__(self, index: int) -> None:
        self.index = index
        self.queue: deque[Any] = deque()
        self.chunks = 0
        self.extra = 0  # items inside queued chunks beyond one per element

    def add_chunk(self, chunk: Chunk) -> None:
        """Queue a tracked run of items (producer side)."""
        with CHUNK_LOCK:  # counted first: a cutter that sees the element sees the count
            self.chunks += 1
            self.extra += len(chunk.items) - 1
        self.queue.append(chunk)

    def took(self, chunks: int, extra: int) -> None:
        """The holder popped ``chunks`` chunk elements holding ``extra`` items beyond one."""
        with CHUNK_LOCK:
            self.chunks -= chunks
            self.extra -= extra

    def depth(self) -> int:
        """Items queued."""
        return len(self.queue) + self.extra


class Shard:
    """The queues and per-shard counters of one shard (scheduling state is in ``_claim``)."""

    __slots__ = (
        "batch_ema",
        "batches",
        "flushes",
        "inbox",
        "index",
        "moved_in",
        "moved_out",
        "parts",
        "pending",
        "plan",
        "pool",
        "signal",
        "slots",
        "steals_in",
        "steals_out",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.parts: list[Part] = []
        self.slots: Slots | None = None  # unkeyed pipelines: batches being filled
        self.pool: Any = None  # keyed pipelines: this shard's own TokenPool
        self.signal: Any = None  # keyed: the token returned once a batch (see _claim)
        self.pending: deque[Any] = deque()  # Segments to run first (retries, handed over)
        self.inbox: deque[Any] = deque()  # work other threads hand to this shard
        self.plan: deque[Any] = deque(maxlen=1)  # the balancer's latest steal request
        self.batch_ema = 0.0  # moving average of its handler calls' duration
        self.batches = 0
        self.flushes = [0, 0, 0, 0]
        self.steals_out = self.steals_in = self.moved_out = self.moved_in = 0

    def depth(self) -> int:
        """Items queued (not yet cut); unkeyed, an estimate from the head slots."""
        parts = self.parts
        if len(parts) == 1:
            part = parts[0]
            depth = len(part.queue) + part.extra
        else:
            depth = 0
            for part in parts:
                depth += len(part.queue) + part.extra
        slots = self.slots
        if slots is not None:
            depth += slots.depth()
        return depth

    def retrying(self) -> int:
        """Items of failed batches waiting for another call."""
        return sum(len(seg.items) for seg in list(self.pending))

    def backlog(self) -> int:
        """Items queued, counted exactly (slower than ``depth``: for balancing and stats)."""
        queued = sum(p.depth() for p in list(self.parts))
        if self.slots is not None:
            queued += self.slots.backlog()
        for element, _ in list(self.inbox):
            queued += element.depth()
        return queued
