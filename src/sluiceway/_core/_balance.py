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

**Work stealing.** The step compares shard backlogs and posts a request in the most
loaded shard's ``plan``; the holder of the donor's lease carries it out at its next batch
boundary and puts what it gives in the taker's ``inbox``, which only the taker's holder
drains. No lock is held while inspecting and none on the submit path. Unkeyed: whole filled
batches move. Keyed: whole virtual partitions move with their queues (a partition never has
items in the donor's handler at a batch boundary), so per-key order holds.

Ownership: the balancer alone replaces ``State.batch_sizes`` (an immutable tuple) and keeps
its own flush tallies; it writes nothing of a shard but the ``plan`` mailbox.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._failure import Segment
from ._shard import FLUSH_SIZE, FLUSH_TIME, Part, Shard
from ._state import State

__all__ = ["Balancer", "give", "receive"]


class Balancer:
    """The periodic step: adapt the batch sizes, plan steals."""

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
        self.changes = 0  # how often a batch size moved
        self.seen = [(0, 0)] * len(st.shards)  # size and time flushes at the last step

    def maybe_step(self, now: float, healthy: Callable[[Shard], bool]) -> None:
        """Run a step if one is due and no other worker is running it."""
        if now < self.next_at or not self.lock.acquire(blocking=False):
            return
        try:
            self.next_at = now + self.interval
            if self.adaptive:
                self.adapt()
            if self.steal and not self.st.draining:
                self.plan_steal(healthy)
        finally:
            self.lock.release()

    def adapt(self) -> None:
        """Move each shard's batch size by the seed rule and the AIMD rule."""
        sizes = self.st.batch_sizes
        new = tuple(self._next_size(s, sizes[s.index]) for s in self.st.shards)
        if new != sizes:
            self.changes += sum(a != b for a, b in zip(new, sizes, strict=True))
            self.st.batch_sizes = new

    def _next_size(self, shard: Shard, size: int) -> int:
        sized, timed = shard.flushes[FLUSH_SIZE], shard.flushes[FLUSH_TIME]
        seen_sized, seen_timed = self.seen[shard.index]
        d_sized, d_timed = sized - seen_sized, timed - seen_timed
        self.seen[shard.index] = (sized, timed)
        flushed = d_sized + d_timed
        fill = shard.backlog() / self.st.shard_capacity[shard.index]
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

    def plan_steal(self, healthy: Callable[[Shard], bool]) -> None:
        """Ask the shard with the longest expected drain to give work to a fast idle one.

        A shard's expected drain time is its backlog times its measured time an item
        (batch-time average over batch size), so a slow shard is relieved first and is not
        chosen to take work while a faster one is idle.
        """
        st = self.st
        sizes = st.batch_sizes
        known = [s.batch_ema / sizes[s.index] for s in st.shards if s.batch_ema > 0]
        default = sum(known) / len(known) if known else 1.0

        def per_item(s: Shard) -> float:
            return s.batch_ema / sizes[s.index] if s.batch_ema > 0 else default

        backlogs = {s.index: s.backlog() for s in st.shards}
        drains = [(backlogs[s.index] * per_item(s), s.index, s) for s in st.shards]
        donor_drain, _, donor = max(drains)
        if backlogs[donor.index] < 2 * sizes[donor.index]:
            return
        if st.cfg.key is not None and donor.pending:
            return  # its failed batch goes first; moving partitions could reorder keys
        idle = [
            (per_item(s), s.index, s)
            for _, _, s in drains
            if s is not donor and healthy(s) and backlogs[s.index] < sizes[s.index]
        ]
        if not idle:
            return
        _, _, taker = min(idle)
        if backlogs[taker.index] * per_item(taker) * 2 > donor_drain:
            return
        donor.plan.append((taker, backlogs[donor.index] // 2))


def give(st: State, donor: Shard) -> None:
    """Carry out a planned steal; called by the holder of the donor's lease."""
    try:
        taker, amount = donor.plan.popleft()
    except IndexError:
        return
    if st.cfg.key is not None:
        if donor.pending:
            return  # a failed batch waits on this shard: moving partitions could reorder keys
        moved = _give_partitions(st, donor, taker, amount)
    else:
        assert donor.slots is not None
        moved = 0
        for items in donor.slots.take_complete(amount):
            taker.inbox.append((Segment(items), True))
            moved += len(items)
    if moved:
        donor.steals_out += 1
        donor.moved_out += moved


def _give_partitions(st: State, donor: Shard, taker: Shard, amount: int) -> int:
    """Keyed: move whole partitions, largest queue first, with their queues."""
    moved = 0
    for part in sorted(donor.parts, key=Part.depth, reverse=True):
        if moved >= amount or len(donor.parts) < 2 or not part.queue:
            break
        donor.parts.remove(part)
        st.owner[part.index] = taker
        st.takes[part.index] = taker.pool.take
        moved += part.depth()
        taker.inbox.append((part, True))
    return moved


def receive(shard: Shard) -> None:
    """The holder takes in what other threads handed its shard (steals and hand-offs)."""
    inbox = shard.inbox
    while inbox:
        element, stolen = inbox.popleft()
        if isinstance(element, Part):
            shard.parts.append(element)
            moved = element.depth()
        else:
            shard.pending.appendleft(element)
            moved = len(element.items)
        if stolen:
            shard.steals_in += 1
            shard.moved_in += moved
