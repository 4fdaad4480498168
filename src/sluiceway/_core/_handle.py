"""Worker threads: lease a shard whose batch is due, cut it, hand it to the handler.

How many threads run is the engine's choice, not the shard count's. Under the GIL, threads
that compute only take turns, so while handlers hold the GIL one awake worker drains every
due shard and the others stay benched (see ``_claim``); while handlers wait on I/O
(measured: thread CPU time against wall time of sampled handler calls), a worker that finds
more due shards wakes a benched helper, so up to ``workers`` batches wait on I/O at once.

A worker never dies: whatever escapes (a bug, or user code outside a handler call) is
logged, the lease is given back in a ``finally``, and the loop goes on.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from ._balance import Balancer, give, receive
from ._batch import cut
from ._claim import ADOPT, Lease, Scan, Scheduler, Waiter
from ._failure import Segment, owners_of, requeue
from ._priority import PriorityLane
from ._ratelog import log
from ._settle import ABANDONED, Settle
from ._shard import FLUSH_SHUTDOWN, FLUSH_SIZE, RETRY, Shard
from ._state import State
from ._threads import mark_engine_thread

__all__ = ["Workers", "current_shard"]

_local = threading.local()


def current_shard() -> int | None:
    """The index of the shard whose batch the calling handler is processing.

    None outside a regular batch handler call (for example in a priority handler).
    """
    return getattr(_local, "shard", None)


SAMPLE_EVERY = 4  # time the handler (wall, CPU) on one batch in this many
SAMPLES_KEPT = 16  # judge on the best of this many samples (GIL waits look like I/O)
IO_BOUND_BELOW = 0.5  # CPU share under which handlers count as waiting on I/O


class Workers:
    """The pool of worker threads and the priority lane's thread."""

    def __init__(
        self,
        st: State,
        sched: Scheduler,
        settle: Settle,
        lane: PriorityLane,
        balancer: Balancer,
    ) -> None:
        self.st = st
        self.sched = sched
        self.settle = settle
        self.lane = lane
        self.balancer = balancer
        self.threads: list[threading.Thread] = []
        self.shares: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.samples = SAMPLE_EVERY - 1  # measure the very first batch

    def start(self) -> None:
        """Start the threads (once)."""
        if self.threads:
            return
        for i in range(self.st.cfg.workers):
            self.threads.append(
                threading.Thread(
                    target=self._loop, args=(i,), name=f"sluiceway-worker-{i}", daemon=True
                )
            )
        self.threads.append(
            threading.Thread(target=self._lane_loop, name="sluiceway-priority", daemon=True)
        )
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> int:
        """Join every thread; return how many are still alive (stuck in a handler)."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in self.threads)

    # -- the loops -----------------------------------------------------------------------------
    def _lane_loop(self) -> None:
        mark_engine_thread(self.st)
        while not self.st.stopping:
            try:
                self.lane.run_thread()
            except BaseException:  # noqa: BLE001 - logged: an engine thread must not die
                log.critical("priority lane thread error (continuing)", exc_info=True)

    def _loop(self, index: int) -> None:
        mark_engine_thread(self.st)
        st = self.st
        sched = self.sched
        ready = st.ready
        me = Waiter()
        now = st.now
        view = Scan()
        pq = st.pq
        serve = self.lane.serve
        while True:
            lease: Lease | None = None
            try:
                if pq:
                    serve()
                ready[index] = 1
                if st.stopping:
                    return
                self.balancer.maybe_step(now(), sched.open_to_work)
                lease, deadline = sched.claim(now(), view)
                if lease is None:
                    ready[index] = 0  # before sleep() looks at the queues once more
                    lease = sched.sleep(me, deadline, view)
                    if lease is None:
                        continue
                # Not ready while in the handler (it may block for as long as it likes); a
                # priority item that came just before we said so is served first.
                ready[index] = 0
                if pq:
                    serve()
                self.run(lease)
            except BaseException:  # noqa: BLE001 - logged: an engine thread must not die
                log.critical("worker thread error (continuing)", exc_info=True)
            finally:
                if lease is not None:
                    sched.unclaim(lease, now())

    def run(self, lease: Lease) -> None:
        """Run at most one handler call under ``lease``."""
        st = self.st
        shard = lease.shard
        if shard.inbox:
            receive(shard)
        if shard.plan:
            give(st, shard)  # a batch boundary: nothing of this shard is in a handler
        now = st.now()
        if lease.reason == RETRY:
            pending = shard.pending
            if not pending or pending[0].not_before > now:
                return  # only handed-over work came in; the scheduler looks again
            self.call(lease, pending.popleft())
            return
        size = st.batch_sizes[shard.index]
        born = self.sched.first_seen[shard.index]
        items, marks = cut(shard, size)
        lease.cut = True
        if shard.depth():  # what is left counts as first seen by the latest scan
            lease.rest_since = self.sched.last_scan
        if not items:
            return
        auto = st.auto
        if auto is not None and not auto.seen:
            auto.touch()  # the pipeline is busy: hold the short switch interval
        seg = Segment(items, owners_of(marks, len(items)), born=born)
        if lease.reason == ADOPT:
            self._hand_over(shard, seg, now)
            return
        reason = lease.reason  # why the batch was due: size, time, flush() or the drain
        if reason == FLUSH_SIZE and len(items) < size and st.draining:
            reason = FLUSH_SHUTDOWN  # a slot the closing pool completed with SKIP markers
        shard.flushes[reason] += 1
        self.call(lease, seg)

    def _hand_over(self, sick: Shard, seg: Segment, now: float) -> None:
        """A cut-off shard's due batch goes to a healthy shard's inbox (unkeyed only)."""
        target = self.sched.healthy(now, sick)
        if target is None:
            sick.pending.appendleft(seg)  # no one can take it: it waits for the cool-down
        else:
            target.inbox.append((seg, False))
            self.sched.wake_bench()

    def call(self, lease: Lease, seg: Segment) -> None:
        """Call the handler for ``seg`` under ``lease`` and settle the result."""
        st = self.st
        shard = lease.shard
        sched = self.sched
        if sched.bench and (
            (st.io_bound and self._more_due()) or (self._watch_vacant() and self._slow(shard))
        ):
            sched.wake_bench()
        _local.shard = shard.index
        handler = st.cfg.handler
        self.samples += 1
        try:
            if self.samples % SAMPLE_EVERY:
                error = self.settle.call(handler, list(seg.items), shard, seg)
            else:
                error = self._call_sampled(shard, seg)
        finally:
            _local.shard = None
        shard.batches += 1
        if error is ABANDONED:
            return
        lease.result = error is None
        again = self.settle.settle(shard, seg, error, st.now())
        if again:
            requeue(shard.pending, again, keyed=st.cfg.key is not None)

    def _call_sampled(self, shard: Shard, seg: Segment) -> BaseException | None:
        """Call the handler, timing it: batch-time EMA, and the CPU share of its wall time.

        A computing handler that the GIL preempted looks like one waiting on I/O (long wall
        time, little CPU), so I/O-boundness is judged by the best recent sample.
        """
        st = self.st
        t0, wall0, cpu0 = st.now(), time.perf_counter(), time.thread_time()
        error = self.settle.call(st.cfg.handler, list(seg.items), shard, seg)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        took = st.now() - t0
        st.h_batch.observe(took)
        shard.batch_ema += (took - shard.batch_ema) * 0.25
        if wall > 0:
            self.shares.append(min(cpu / wall, 1.0))
            st.io_bound = max(self.shares) < IO_BOUND_BELOW
        return error

    def _watch_vacant(self) -> bool:
        """No sleeping worker watches the clock or the queues (we were the one)."""
        return self.sched.timekeeper is None and not self.sched.parked

    def _slow(self, shard: Shard) -> bool:
        """Handler calls are long, or not measured yet: another worker should keep watch.

        While this worker is in a long call, a benched worker takes the watching role, so
        due batches of other shards are not left waiting for the call to end. Quick calls
        do not need that: this worker is back before anything is overdue.
        """
        return not self.shares or shard.batch_ema * 4 > self.st.cfg.max_delay

    def _more_due(self) -> bool:
        sizes = self.st.batch_sizes
        free = self.sched.free
        return any(free[s.index] and s.depth() >= sizes[s.index] for s in self.st.shards)
