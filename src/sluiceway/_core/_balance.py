"""Load balance: adaptive batch size and work stealing, off the hot path.

One balancing step runs every ``balance_interval`` seconds of pipeline clock, taken by
whichever worker notices it is due (a non-blocking lock makes that one owner at a time), so
there is no extra thread and nothing runs while the pipeline is idle.

**Adaptive batch size.** Each shard's batch size starts at ``batch_size`` and moves between
``min_batch`` and ``max_batch``. The seed's rule: queues above 80% of capacity double it,
below 20% (with batches going out by age) halve it, judged shard by shard: one hot or slow
shard does not set the size of the others. Beyond the seed, an AIMD rule steers by
measured batch time: while batches fill up (go out by size) and a batch takes under half of
``max_delay``, grow by ``min_batch`` (additive increase); when queues are short (so the
batch's own time is the latency) and a batch takes longer than ``max_delay``, halve
(multiplicative decrease), so latency stays inside ``max_delay``. With deep queues the wait
in the queue dominates, and bigger batches shorten it.

**Work stealing.** The step compares shard backlogs and asks the most loaded shard to give
work to the least loaded one; the donor's own worker does the move at its next batch
boundary, so no lock is held while inspecting and none on the submit path. Unkeyed: whole
filled batches move. Keyed: whole virtual partitions move with their queues (a partition
never has items in the donor's handler at a batch boundary), so per-key order holds.
"""

from __future__ import annotations

import threading
from typing import Any

from ._failure import Segment
from ._shard import FLUSH_SIZE, FLUSH_TIME, Chunk, Shard
from ._slots import SKIP
from ._state import State

__all__ = ["Balancer", "give"]


class Balancer:
    """The periodic step: adapt the batch size, plan steals."""

    def __init__(
        self,
        st: State,
        *,
        adaptive: bool,
        min_batch: int,
        max_batch: int,
        steal: bool,
        interval: float,
    ) -> None:
        self.st = st
        self.adaptive = adaptive
        self.min_batch = min_batch
        self.max_batch = max_batch
        self.steal = steal
        self.interval = interval
        self.next_at = 0.0
        self.lock = threading.Lock()
        self.changes = 0  # how often the batch size moved

    def maybe_step(self, now: float) -> None:
        """Run a step if one is due and no other worker is running it."""
        if now < self.next_at or not self.lock.acquire(blocking=False):
            return
        try:
            self.next_at = now + self.interval
            if self.adaptive:
                self.adapt()
            if self.steal and not self.st.draining:
                self.plan_steal()
        finally:
            self.lock.release()

    def adapt(self) -> None:
        """Move each shard's batch size by the seed rule and the AIMD rule."""
        for shard in self.st.shards:
            new = self._next_size(shard)
            if new != shard.batch_size:
                shard.batch_size = new
                self.changes += 1

    def _next_size(self, shard: Shard) -> int:
        size = shard.batch_size
        sized, timed = shard.flushes[FLUSH_SIZE], shard.flushes[FLUSH_TIME]
        d_sized, d_timed = sized - shard.flushes_seen[0], timed - shard.flushes_seen[1]
        shard.flushes_seen = (sized, timed)
        flushed = d_sized + d_timed
        fill = shard.backlog() / shard.capacity
        delay = self.st.cfg.max_delay
        ema = shard.batch_ema
        if fill > 0.8:
            new = size * 2  # the seed: deep queues, bigger batches
        elif fill < 0.2 and ema > delay > 0:
            new = size // 2  # queues are short, so batch time is the latency: shrink fast
        elif fill < 0.2 and flushed and d_timed * 2 > flushed:
            new = size // 2  # the seed: shallow queues and batches not filling up
        elif flushed and d_sized * 10 >= flushed * 9 and ema * 2 < delay:
            new = size + self.min_batch  # batches fill up and are quick: try bigger
        else:
            new = size
        return max(self.min_batch, min(self.max_batch, new))

    def plan_steal(self) -> None:
        """Ask the shard with the longest expected drain to give work to a fast idle one.

        A shard's expected drain time is its backlog times its measured time an item
        (batch-time average over batch size), so a slow shard is relieved first and is not
        chosen to take work while a faster one is idle.
        """
        st = self.st
        now = st.now()
        known = [s.batch_ema / s.batch_size for s in st.shards if s.batch_ema > 0]
        default = sum(known) / len(known) if known else 1.0

        def per_item(s: Shard) -> float:
            return s.batch_ema / s.batch_size if s.batch_ema > 0 else default

        def open_to_work(s: Shard) -> bool:
            return s.breaker is None or s.breaker.allows(now)

        backlogs = {s.index: s.backlog() for s in st.shards}
        drains = [(backlogs[s.index] * per_item(s), s.index, s) for s in st.shards]
        donor_drain, _, donor = max(drains)
        if backlogs[donor.index] < 2 * donor.batch_size:
            return
        if st.cfg.key is not None and donor.pending:
            return  # its failed batch goes first; moving partitions could reorder keys
        idle = [
            (per_item(s), s.index, s)
            for _, _, s in drains
            if s is not donor and open_to_work(s) and backlogs[s.index] < s.batch_size
        ]
        if not idle:
            return
        _, _, taker = min(idle)
        if backlogs[taker.index] * per_item(taker) * 2 > donor_drain:
            return
        donor.give = (taker, backlogs[donor.index] // 2)


def give(st: State, donor: Shard) -> None:
    """Carry out a planned steal; called by the donor's worker at a batch boundary."""
    request = donor.give
    donor.give = None
    if request is None:
        return
    taker, amount = request
    if st.cfg.key is not None and donor.pending:
        return  # a failed batch waits on this shard: moving partitions could reorder keys
    moved = (
        _give_partitions(st, donor, taker, amount)
        if st.cfg.key
        else _give_slots(st, donor, taker, amount)
    )
    if moved:
        donor.steals_out += 1
        donor.moved_out += moved
        taker.steals_in += 1
        taker.moved_in += moved
        if taker.first_seen is None:
            taker.first_seen = st.last_scan


def _give_slots(st: State, donor: Shard, taker: Shard, amount: int) -> int:
    """Unkeyed: hand over whole filled batches, oldest first (the donor keeps its last)."""
    moved = 0
    slots = donor.slots
    while moved < amount and len(slots) > 1 and slots[0].complete():
        slot = slots.popleft()
        items = slot.items[slot.offset :]
        if st.skips:
            kept = [x for x in items if x is not SKIP]
            if len(kept) != len(items):
                with st.count_lock:
                    st.skips -= len(items) - len(kept)
            items = kept
        if items:
            taker.pending.appendleft(Segment(items, None, 0, [-1]))
            moved += len(items)
    return moved


def _give_partitions(st: State, donor: Shard, taker: Shard, amount: int) -> int:
    """Keyed: move whole partitions, largest queue first, with their queues."""
    moved = 0
    if len(donor.parts) < 2:
        return 0
    for queue in sorted(donor.parts, key=len, reverse=True):
        if moved >= amount or len(donor.parts) < 2 or not queue:
            break
        p = _partition_of(st, queue)
        chunks, extra = _chunk_counts(queue)
        with donor.lock, taker.lock:
            donor.parts.remove(queue)
            taker.parts.append(queue)
            donor.chunks -= chunks
            donor.chunk_extra -= extra
            taker.chunks += chunks
            taker.chunk_extra += extra
        st.owner[p] = taker
        st.takes[p] = taker.pool.take  # type: ignore[union-attr]
        st.shard_of[id(queue)] = taker
        moved += len(queue)
    return moved


def _partition_of(st: State, queue: Any) -> int:
    for p, q in enumerate(st.parts):
        if q is queue:
            return p
    raise LookupError("queue is not a partition")  # pragma: no cover - internal invariant


def _chunk_counts(queue: Any) -> tuple[int, int]:
    chunks = extra = 0
    for element in list(queue):  # a copy: producers may append meanwhile
        if type(element) is Chunk:
            chunks += 1
            extra += len(element.items) - 1
    return chunks, extra
