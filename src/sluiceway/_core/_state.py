"""What the engine's modules share: settings, shards, routing, token pools, the priority queue.

Each field names its owner (docs/design.md has the table). Fields written on the hot path
are written with single atomic operations (``deque.append``/``popleft``, ``list`` item
assignment); counters that several threads add to are behind ``count_lock`` and are
touched once a call or once a batch, never once an item.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from itertools import chain, repeat, zip_longest
from typing import Any

from .._clock import Clock
from ._claim import Waiter
from ._config import Config
from ._histogram import Histogram
from ._interval import AutoInterval
from ._shard import Part, Shard
from ._slots import Skips, Slots
from ._tokens import TokenPool

__all__ = ["State"]

LATENCY_WINDOW = 8192  # priority latencies kept for percentiles


class State:
    """The pipeline's shared structures (not its policies: those are in their modules)."""

    def __init__(self, cfg: Config, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.now = clock.now
        n = cfg.shards
        self.shards = [Shard(i) for i in range(n)]
        self.shard_capacity = _split(cfg.capacity, n)
        self.slot_max = max(1, cfg.capacity // n)  # no slot outgrows a shard's share
        # Batch size per shard: an immutable tuple the Balancer replaces (its only writer).
        self.batch_sizes: tuple[int, ...] = (cfg.batch_size,) * n
        self.skips = Skips()
        # Keyed routing: partition -> its queue, its owner shard and the owner's token pop.
        # Entry p changes only when the holder of owner[p] hands the partition over.
        self.parts: list[Part] = []
        self.owner: list[Shard] = []
        self.takes: list[Callable[[], Any]] = []
        self.pool: TokenPool | None = None  # unkeyed: one pool of slot tokens

        self.pq: deque[tuple[Any, float, Any]] = deque()
        self.ptokens = TokenPool(repeat(None, cfg.priority_capacity))
        self.prio_waiter = Waiter()  # the priority thread sleeps on it
        self.prio_parked = False
        # True while the lane's thread sleeps at most POLL seconds (regular work in flight):
        # it will look at the priority queue soon, so producers need not wake it. Only the
        # lane's thread writes it.
        self.prio_polling = False
        # switch_interval="auto": set once, before the threads start, by the Pipeline.
        self.auto: AutoInterval | None = None
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.h_priority = Histogram()  # submit to priority handler start
        self.h_batch = Histogram()  # handler call duration (sampled calls)
        self.h_e2e = Histogram()  # regular items: oldest item first seen to batch done
        # ready[i] is 1 while worker i is awake and between batches: it serves pending
        # priority items before its next handler call, so producers need not wake the
        # lane's thread (it is sooner than a woken thread could get the GIL, and costs no
        # thread switch). Only worker i writes it. Not while in a call: a handler may
        # block for as long as it likes.
        self.ready = [0] * cfg.workers
        self.io_bound = False  # until measured: helpers that only take turns cost throughput
        # Lifecycle, each set once by shutdown: closed (refuse), draining (cut partial
        # batches), stopping (threads leave); draining and stopping through the Scheduler.
        self.closed = False
        self.draining = False
        self.stopping = False
        self.count_lock = threading.Lock()
        self.refused = 0
        self.prio_refused = 0

    def install(self, full: Callable[[], None], signal: Callable[[Shard], object]) -> None:
        """Create the queues and token pools: capacity per shard, a wake-up per batch."""
        cfg = self.cfg
        size = cfg.batch_size
        if cfg.key is None:
            per_shard = []
            for shard, cap in zip(self.shards, self.shard_capacity, strict=True):
                shard.parts.append(Part(shard.index))  # tracked submissions' chunks
                shard.slots = Slots(self.skips, full)
                per_shard.append(shard.slots.mint(cap, min(size, cap)))
            # Interleaved, so that the first items spread round-robin over the shards.
            self.pool = TokenPool(_interleave(per_shard))
            return
        for p in range(cfg.partitions):
            owner = self.shards[p % cfg.shards]
            part = Part(p)
            owner.parts.append(part)
            self.parts.append(part)
            self.owner.append(owner)
        for shard, cap in zip(self.shards, self.shard_capacity, strict=True):
            shard.signal = signal(shard)
            shard.pool = TokenPool(
                shard.signal if i % size == size - 1 else None for i in range(cap)
            )
        self.takes = [owner.pool.take for owner in self.owner]

    def pools(self) -> list[TokenPool]:
        """The regular lane's token pools (one, or one a shard when keyed)."""
        if self.pool is not None:
            return [self.pool]
        return [s.pool for s in self.shards]

    def accepted(self) -> int:
        """Items (both lanes) admitted so far, derived from the tokens out."""
        return sum(p.granted() for p in self.pools()) + self.ptokens.granted()

    def in_flight(self) -> int:
        """Regular items admitted without an outcome yet (at most ``capacity``)."""
        return sum(p.out() for p in self.pools())

    def wake_lane(self) -> None:
        """Wake the priority lane's thread (it looks at its queue, retries, auto interval)."""
        self.prio_parked = False
        self.prio_waiter.wake()

    def priority_queued(self) -> None:
        """Producers, after queueing priority items: wake the lane unless it looks soon.

        Not while a worker is awake between batches (``ready``: it serves the items before
        its next call) nor while the lane polls; and hold the auto interval (busy).
        """
        if self.prio_parked and not self.prio_polling and (self.io_bound or 1 not in self.ready):
            self.wake_lane()
        auto = self.auto
        if auto is not None and not auto.seen:
            auto.touch()

    def regular_in_flight(self) -> bool:
        """A lock-free hint: some regular item is admitted and has no outcome yet."""
        return any(len(p.tokens) + len(p.held) < p.initial for p in self.pools())

    def refuse(self, count: int, *, priority: bool = False) -> None:
        """Count refused items (once a call)."""
        with self.count_lock:
            if priority:
                self.prio_refused += count
            else:
                self.refused += count


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _interleave(iterables: list[list[Any]]) -> chain[Any]:
    sentinel = object()
    return chain.from_iterable(
        (x for x in row if x is not sentinel) for row in zip_longest(*iterables, fillvalue=sentinel)
    )
