"""Worker threads: claim a shard whose batch is due, cut it, hand it to the handler.

How many threads run is the engine's choice, not the shard count's. Under the GIL, threads
that compute only take turns, so while handlers hold the GIL one awake worker drains every
due shard and the others stay asleep; while handlers wait on I/O (measured: thread CPU time
against wall time of sampled handler calls), a worker that finds more due shards wakes a
helper, so up to ``workers`` batches wait on I/O at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._batch import cut
from ._outcome import Outcomes
from ._priority import PriorityLane
from ._shard import FLUSH_MANUAL, FLUSH_SHUTDOWN, FLUSH_SIZE, FLUSH_TIME, Shard
from ._state import State, Waiter

__all__ = ["Workers", "arrived", "wake_one"]

SAMPLE_EVERY = 16  # measure the handler's CPU share on one batch in this many
IO_BOUND_BELOW = 0.5  # CPU share under which handlers count as waiting on I/O


def wake_one(st: State, force: bool = False) -> bool:
    """Wake one sleeping worker. Call with ``st.park_lock`` held."""
    if not st.parked:
        return False
    if not force and st.awake and not st.io_bound:
        return False  # an awake worker will get to it; a second would only take turns
    waiter = st.parked.popleft()
    if waiter.timed:
        waiter.timed = False
        st.timed_parked -= 1
    st.awake += 1
    waiter.wake()
    return True


def arrived(st: State, queue: Any) -> None:
    """Slow path of ``submit``, taken only while some worker sleeps."""
    shard = st.shard_of[id(queue)]
    if shard.first_seen is None:
        shard.first_seen = st.now()
    with st.park_lock:
        if not st.parked:
            return
        if shard.depth() >= st.batch_size:
            wake_one(st)  # a full batch is waiting
        elif not st.timed_parked and (st.io_bound or not st.awake):
            wake_one(st, force=True)  # nobody is watching the clock for this item


class Workers:
    """The pool of worker threads and the priority lane's thread."""

    def __init__(self, st: State, outcomes: Outcomes, priority: PriorityLane) -> None:
        self.st = st
        self.outcomes = outcomes
        self.priority = priority
        self.threads: list[threading.Thread] = []
        self.claim_lock = threading.Lock()
        self.cursor = 0
        self.cpu_share = 1.0
        self.samples = 0

    def start(self) -> None:
        """Start the threads (once)."""
        if self.threads:
            return
        st = self.st
        for i in range(st.cfg.workers):
            t = threading.Thread(target=self._loop, name=f"sluiceway-worker-{i}", daemon=True)
            self.threads.append(t)
        self.threads.append(
            threading.Thread(
                target=self.priority.run_thread, name="sluiceway-priority", daemon=True
            )
        )
        with st.park_lock:
            st.awake += st.cfg.workers
        for t in self.threads:
            t.start()

    def wake_all(self) -> None:
        """Wake every sleeping thread (flush, drain, stop)."""
        st = self.st
        with st.park_lock:
            while wake_one(st, force=True):
                pass
        st.prio_parked = False
        st.prio_waiter.wake()

    def join(self, timeout: float) -> int:
        """Join every thread; return how many are still alive (stuck in a handler)."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in self.threads)

    # -- the worker loop -----------------------------------------------------------------
    def _loop(self) -> None:
        st = self.st
        me = Waiter()
        now = st.now
        pq = st.pq
        serve = self.priority.serve
        claim = self.claim
        run = self.run
        while True:
            if pq:
                serve()
            shard, reason, deadline = claim(now())
            if shard is not None:
                run(shard, reason)
                continue
            if st.stopping:
                with st.park_lock:
                    st.awake -= 1
                return
            self._park(me, deadline)

    def claim(self, now: float) -> tuple[Shard | None, int, float | None]:
        """Find and mark busy the next shard with a due batch, or say when one is due."""
        st = self.st
        if st.stopping:
            return None, 0, None
        size = st.batch_size
        delay = st.cfg.max_delay
        draining = st.draining
        shards = st.shards
        n = len(shards)
        start = self.cursor
        deadline: float | None = None
        for i in range(n):
            shard = shards[(start + i) % n]
            if shard.busy:
                continue
            depth = shard.depth()
            if not depth:
                continue
            if depth >= size:
                reason = FLUSH_SIZE
            elif draining:
                reason = FLUSH_SHUTDOWN
            elif shard.flush_requested:
                reason = FLUSH_MANUAL
            else:
                first = shard.first_seen
                if first is None:
                    shard.first_seen = first = now
                due = first + delay
                if now < due:
                    if deadline is None or due < deadline:
                        deadline = due
                    continue
                reason = FLUSH_TIME
            with self.claim_lock:
                if shard.busy:
                    continue
                shard.busy = True
            self.cursor = (start + i + 1) % n
            return shard, reason, None
        return None, 0, deadline

    def run(self, shard: Shard, reason: int) -> None:
        """Cut one batch off a claimed shard and settle it; then release the shard."""
        st = self.st
        try:
            items, marks = cut(shard, st.batch_size)
            if not items:
                return
            if shard.depth():
                shard.first_seen = st.now()
            else:
                shard.first_seen = None
                shard.flush_requested = False
            shard.flushes[reason] += 1
            if st.parked and st.io_bound and self._more_due():
                with st.park_lock:
                    wake_one(st)
            self.samples += 1
            if self.samples % SAMPLE_EVERY:
                self.outcomes.run(shard, items, marks)
            else:
                self._run_sampled(shard, items, marks)
        finally:
            shard.busy = False

    def _run_sampled(self, shard: Shard, items: list[Any], marks: Any) -> None:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        self.outcomes.run(shard, items, marks)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        if wall > 0:
            self.cpu_share += (min(cpu / wall, 1.0) - self.cpu_share) * 0.25
            self.st.io_bound = self.cpu_share < IO_BOUND_BELOW

    def _more_due(self) -> bool:
        size = self.st.batch_size
        return any(not s.busy and s.depth() >= size for s in self.st.shards)

    def _park(self, me: Waiter, deadline: float | None) -> None:
        st = self.st
        with st.park_lock:
            st.parked.append(me)
            me.timed = deadline is not None
            if me.timed:
                st.timed_parked += 1
            st.awake -= 1
        # Look once more after registering: a producer that appended before it could see us
        # sleeping will not wake us, so its item must be visible now.
        shard, _, deadline2 = self.claim(st.now()) if not st.stopping else (None, 0, None)
        if shard is not None:
            shard.busy = False  # unclaim; the loop will claim it again
        if shard is None and not st.stopping and deadline2 == deadline:
            timeout = None if deadline is None else deadline - st.now()
            st.clock.wait(me.lock, timeout)
        with st.park_lock:
            try:
                st.parked.remove(me)
            except ValueError:  # a waker already took us off (and counted us awake)
                return
            if me.timed:
                me.timed = False
                st.timed_parked -= 1
            st.awake += 1
