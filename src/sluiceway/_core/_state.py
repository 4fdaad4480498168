"""The state every engine module shares: shards, token pools, sleeping threads, counters."""

from __future__ import annotations

import threading
from collections import deque
from itertools import chain, repeat
from typing import Any

from .._clock import Clock
from ._config import Config
from ._shard import Shard
from ._tokens import TokenPool

__all__ = ["State", "Waiter"]

LATENCY_WINDOW = 8192  # priority latencies kept for percentiles


class Waiter:
    """A sleeping thread's wake-up lock: held while nobody has woken it."""

    __slots__ = ("lock", "timed")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.timed = False

    def wake(self) -> None:
        """Release the sleeper (a second release before it sleeps again is harmless)."""
        try:
            self.lock.release()
        except RuntimeError:
            pass


class State:
    """Everything the admission, batching, handling and outcome code reads and writes."""

    def __init__(self, cfg: Config, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.now = clock.now
        self.batch_size = cfg.batch_size
        self.shards = [Shard(i, c) for i, c in enumerate(_split(cfg.capacity, cfg.shards))]
        self.shard_of: dict[int, Shard] = {}  # id(queue) -> the shard serving it
        self.parts: list[deque[Any]] = []
        self.owner: list[Shard] = []
        self.takes: list[Any] = []  # keyed: partition -> its owner's token pop
        if cfg.key is None:
            for shard in self.shards:
                queue: deque[Any] = deque()
                shard.parts.append(queue)
                self.shard_of[id(queue)] = shard
            # Interleaved, so that the first items spread round-robin over the shards.
            per_shard = [repeat(s.parts[0].append, s.capacity) for s in self.shards]
            self.pool: TokenPool | None = TokenPool(_interleave(per_shard))
        else:
            self.pool = None
            for shard in self.shards:
                shard.pool = TokenPool(repeat(None, shard.capacity))
            for p in range(cfg.partitions):
                owner = self.shards[p % cfg.shards]
                queue = deque()
                owner.parts.append(queue)
                self.parts.append(queue)
                self.owner.append(owner)
                self.takes.append(owner.pool.take)  # type: ignore[attr-defined]
                self.shard_of[id(queue)] = owner

        self.pq: deque[tuple[Any, float, Any]] = deque()
        self.ptokens = TokenPool(repeat(None, cfg.priority_capacity))
        self.prio_waiter = Waiter()
        self.prio_parked = False
        self.prio_done = 0
        self.prio_dead = 0
        self.prio_lock = threading.Lock()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

        # Sleeping workers. Producers test ``parked`` (truthiness, no lock) after each
        # append; only when somebody sleeps do they take the slow path that may wake one.
        self.parked: deque[Waiter] = deque()
        self.park_lock = threading.Lock()
        self.timed_parked = 0
        self.awake = 0
        self.io_bound = True  # until measured: wake helpers eagerly, safest for latency

        self.count_lock = threading.Lock()
        self.refused = 0
        self.prio_refused = 0
        self.batch_ema = 0.0

        self.closed = False
        self.draining = False
        self.stopping = False
        self.idle_waiters: list[Waiter] = []
        self.room_waiters: list[Waiter] = []

    def pools(self) -> list[TokenPool]:
        """The regular lane's token pools (one, or one a shard when keyed)."""
        if self.pool is not None:
            return [self.pool]
        return [s.pool for s in self.shards if isinstance(s.pool, TokenPool)]

    def accepted_regular(self) -> int:
        """Regular items admitted so far, derived from the tokens out."""
        return sum(p.granted() for p in self.pools())

    def finished(self) -> int:
        """Items (both lanes) processed or dead-lettered so far."""
        done = self.prio_done + self.prio_dead
        for s in self.shards:
            done += s.processed + s.dead
        return done

    def accepted(self) -> int:
        """Items (both lanes) admitted so far."""
        return self.accepted_regular() + self.ptokens.granted()

    def wake_all(self, waiters: list[Waiter]) -> None:
        """Wake and forget every thread in ``waiters`` (idle or room waiters)."""
        if waiters:
            woken = waiters[:]
            del waiters[:]
            for w in woken:
                w.wake()


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _interleave(iterables: list[repeat[Any]]) -> chain[Any]:
    from itertools import zip_longest

    sentinel = object()
    return chain.from_iterable(
        (x for x in row if x is not sentinel) for row in zip_longest(*iterables, fillvalue=sentinel)
    )
