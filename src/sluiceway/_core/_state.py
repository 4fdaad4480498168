"""The state every engine module shares: shards, token pools, sleeping threads, counters."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from itertools import chain, repeat, zip_longest
from typing import Any

from .._clock import Clock
from ._config import Config
from ._histogram import Histogram
from ._shard import Shard
from ._slots import mint
from ._tokens import TokenPool

__all__ = ["State", "Waiter", "wake_bench", "wake_role"]

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
        self.shards = [
            Shard(i, c, cfg.batch_size) for i, c in enumerate(_split(cfg.capacity, cfg.shards))
        ]
        self.shard_of: dict[int, Shard] = {}  # id(queue) -> the shard serving it
        self.parts: list[deque[Any]] = []
        self.owner: list[Shard] = []
        self.takes: list[Any] = []  # keyed: partition -> its owner's token pop
        if cfg.key is None:
            for shard in self.shards:  # tracked submissions' chunks; items go into slots
                queue: deque[Any] = deque()
                shard.parts.append(queue)
                self.shard_of[id(queue)] = shard
            self.pool: TokenPool | None = None  # filled in by install_tokens()
        else:
            self.pool = None
            for p in range(cfg.partitions):
                owner = self.shards[p % cfg.shards]
                queue = deque()
                owner.parts.append(queue)
                self.parts.append(queue)
                self.owner.append(owner)
                self.shard_of[id(queue)] = owner

        self.pq: deque[tuple[Any, float, Any]] = deque()
        self.ptokens = TokenPool(repeat(None, cfg.priority_capacity))
        self.prio_waiter = Waiter()
        self.prio_parked = False
        self.prio_done = 0
        self.prio_dead = 0
        self.prio_lock = threading.Lock()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.h_priority = Histogram()  # submit to priority handler start
        self.h_batch = Histogram()  # handler call duration (sampled calls)
        self.h_e2e = Histogram()  # regular items: oldest item first seen to batch done

        # Sleeping workers, by role (see _signal). Producers test ``parked`` (truthiness,
        # no lock) after each append: it holds the listener, if one sleeps.
        self.parked: deque[Waiter] = deque()
        self.timekeeper: Waiter | None = None
        self.bench: deque[Waiter] = deque()
        self.park_lock = threading.Lock()
        self.last_scan = 0.0  # arrivals after this were not seen by any scan or stamp
        # ready[i] is 1 while worker i is awake and between batches: it will serve pending
        # priority items before its next batch, so the priority thread need not be woken.
        self.ready = [0] * cfg.workers
        self.io_bound = False  # until measured: helpers that only take turns cost throughput

        self.count_lock = threading.Lock()
        self.spread = 0  # round-robin start for tracked chunks
        self.skips = 0  # SKIP markers in slots not yet filtered out (see _slots)
        self.refused = 0
        self.prio_refused = 0
        self.batch_ema = 0.0

        self.suspended = False  # every breaker open: pools withhold their tokens
        self.closed = False
        self.draining = False
        self.stopping = False
        self.idle_waiters: list[Waiter] = []
        self.room_waiters: list[Waiter] = []

    def install_tokens(self, signal: Callable[[State, Shard, deque[Any] | None], object]) -> None:
        """Fill the token pools: capacity per shard, with a signal token per batch's worth."""
        size = self.batch_size
        if self.cfg.key is None:
            # Interleaved, so that the first items spread round-robin over the shards.
            per_shard = [mint(self, s, s.capacity, min(size, s.capacity)) for s in self.shards]
            self.pool = TokenPool(_interleave(per_shard))
        else:
            for shard in self.shards:
                shard.signal = signal(self, shard, None)
                shard.pool = TokenPool(_pattern(shard, size))
            self.takes[:] = [owner.pool.take for owner in self.owner]  # type: ignore[union-attr]

    def wake_timekeeper(self) -> None:
        """A batch is full: wake the worker sleeping on the clock, if one is."""
        with self.park_lock:
            wake_role(self)

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


def wake_role(st: State) -> bool:
    """Wake the timekeeper, else the listener (see ``_signal``). Hold ``st.park_lock``."""
    waiter = st.timekeeper
    if waiter is not None:
        st.timekeeper = None
    elif st.parked:
        waiter = st.parked.popleft()
        st.last_scan = st.now()  # from here on arrivals are not stamped: scans must cover them
    else:
        return False
    waiter.wake()
    return True


def wake_bench(st: State) -> bool:
    """Wake one benched worker. Call with ``st.park_lock`` held."""
    if not st.bench:
        return False
    st.bench.popleft().wake()
    return True


def _pattern(shard: Shard, size: int) -> list[Any]:
    """``shard.capacity`` tokens, every ``size``-th of them the shard's signal."""
    return [shard.signal if i % size == size - 1 else shard.token for i in range(shard.capacity)]


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _interleave(iterables: list[list[Any]]) -> chain[Any]:
    sentinel = object()
    return chain.from_iterable(
        (x for x in row if x is not sentinel) for row in zip_longest(*iterables, fillvalue=sentinel)
    )
