"""Worker threads: claim a shard whose batch is due, cut it, hand it to the handler.

How many threads run is the engine's choice, not the shard count's. Under the GIL, threads
that compute only take turns, so while handlers hold the GIL one awake worker drains every
due shard and the others stay benched (see ``_signal``); while handlers wait on I/O
(measured: thread CPU time against wall time of sampled handler calls), a worker that finds
more due shards wakes a benched helper, so up to ``workers`` batches wait on I/O at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from ._balance import Balancer, give
from ._batch import Marks, cut
from ._failure import Failures, Segment, owners_of
from ._outcome import Outcomes
from ._priority import PriorityLane
from ._shard import FLUSH_MANUAL, FLUSH_SHUTDOWN, FLUSH_SIZE, FLUSH_TIME, RETRY, Shard
from ._signal import remove, wake_bench, wake_role
from ._state import State, Waiter

__all__ = ["Workers", "current_shard"]

_local = threading.local()


def current_shard() -> int | None:
    """The index of the shard whose batch the calling handler is processing.

    None outside a regular batch handler call (for example in a priority handler).
    """
    return getattr(_local, "shard", None)


SAMPLE_EVERY = 4  # time the handler (wall, CPU) on one batch in this many
SAMPLES_KEPT = 8  # judge on the best of this many samples
IO_BOUND_BELOW = 0.5  # CPU share under which handlers count as waiting on I/O


class Workers:
    """The pool of worker threads and the priority lane's thread."""

    def __init__(
        self,
        st: State,
        outcomes: Outcomes,
        priority: PriorityLane,
        failures: Failures,
        balancer: Balancer,
    ) -> None:
        self.balancer = balancer
        self.st = st
        self.outcomes = outcomes
        self.failures = failures
        self.priority = priority
        self.threads: list[threading.Thread] = []
        self.cursor = 0
        self.shares: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.samples = SAMPLE_EVERY - 1  # measure the very first batch

    def start(self) -> None:
        """Start the threads (once)."""
        if self.threads:
            return
        for i in range(self.st.cfg.workers):
            t = threading.Thread(
                target=self._loop, args=(i,), name=f"sluiceway-worker-{i}", daemon=True
            )
            self.threads.append(t)
        self.threads.append(
            threading.Thread(
                target=self.priority.run_thread, name="sluiceway-priority", daemon=True
            )
        )
        for t in self.threads:
            t.start()

    def wake_all(self) -> None:
        """Wake every sleeping thread (flush, drain, stop)."""
        st = self.st
        with st.park_lock:
            while wake_role(st) or wake_bench(st):
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
    def _loop(self, index: int) -> None:
        st = self.st
        ready = st.ready
        ready[index] = 1
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
                # Not ready while in the handler; a priority item that came just before we
                # said so is served first (it may have counted on us).
                ready[index] = 0
                if pq:
                    serve()
                run(shard, reason)
                ready[index] = 1
                continue
            ready[index] = 0
            if st.stopping:
                return
            self._sleep(me, deadline)
            ready[index] = 1

    def claim(self, now: float) -> tuple[Shard | None, int, float | None]:
        """Find and mark busy the next shard with a due batch, or say when one is due."""
        st = self.st
        if st.stopping:
            return None, 0, None
        if st.suspended:
            self.failures.check_all_open()  # a cooldown may have ended
        self.balancer.maybe_step(now)
        delay = st.cfg.max_delay
        draining = st.draining
        keyed = st.cfg.key is not None
        shards = st.shards
        n = len(shards)
        start = self.cursor
        seen_since = st.last_scan  # anything unstamped arrived after this
        st.last_scan = now
        deadline: float | None = None
        for i in range(n):
            shard = shards[(start + i) % n]
            if shard.busy:
                continue
            gate = shard.breaker
            if gate is not None and not gate.allows(now):
                if gate.open_until is not None and now < gate.open_until:
                    if deadline is None or gate.open_until < deadline:
                        deadline = gate.open_until
                    if shard.slots and shard.depth():
                        self._adopt(shard, now)  # a healthy shard takes its due batch
                continue
            reason = -1
            if shard.pending:
                due_at = shard.pending[0].not_before
                if now >= due_at:
                    reason = RETRY
                else:
                    if deadline is None or due_at < deadline:
                        deadline = due_at
                    if keyed:
                        continue  # keyed: nothing may overtake the segment
            if reason < 0:
                depth = shard.depth()
                if not depth:
                    continue
                if depth >= shard.batch_size or shard.full():
                    reason = FLUSH_SIZE
                elif draining:
                    reason = FLUSH_SHUTDOWN
                elif shard.flush_requested:
                    reason = FLUSH_MANUAL
                else:
                    first = shard.first_seen
                    if first is None:
                        shard.first_seen = first = seen_since
                    due = first + delay
                    if now < due:
                        if deadline is None or due < deadline:
                            deadline = due
                        continue
                    reason = FLUSH_TIME
            try:
                shard.free.pop()  # atomic: of two racing workers, one gets the shard
            except IndexError:
                continue
            shard.busy = True
            if gate is not None and gate.open_until is not None:
                gate.probing = True  # half-open: this batch is the probe
            self.cursor = (start + i + 1) % n
            return shard, reason, None
        return None, 0, deadline

    def _adopt(self, sick: Shard, now: float) -> None:
        """Hand a due batch of a shard whose breaker is open to an idle healthy shard.

        Unkeyed items have no order to keep, so the batch becomes a fresh segment on the
        healthy shard, which takes it before its own work.
        """
        st = self.st
        first = sick.first_seen
        due = (
            sick.full()
            or st.draining
            or sick.flush_requested
            or (first is not None and now >= first + st.cfg.max_delay)
        )
        if not due:
            if first is None:
                sick.first_seen = now
            return
        for shard in st.shards:
            gate = shard.breaker
            if shard is sick or shard.busy or (gate is not None and not gate.allows(now)):
                continue
            try:
                sick.free.pop()
            except IndexError:
                return
            try:
                items, marks = cut(st, sick, sick.batch_size)
                sick.first_seen = now if sick.depth() else None
            finally:
                sick.free.append(True)
            if items:
                shard.pending.appendleft(Segment(items, owners_of(marks, len(items)), 0, [-1]))
            return

    def run(self, shard: Shard, reason: int) -> None:
        """Take one batch (or retry segment) of a claimed shard, call the handler, settle."""
        st = self.st
        segment: Segment | None = None
        marks: Marks | None = None
        if shard.give is not None:
            give(st, shard)  # a batch boundary: nothing of this shard is in a handler
            if reason != RETRY and not shard.depth():
                shard.release()
                return
        born: float | None = None
        if reason == RETRY:
            segment = shard.pending.popleft()
            items = segment.items
        else:
            born = shard.first_seen
            items, marks = cut(st, shard, shard.batch_size)
            if not items:
                if shard.breaker is not None:
                    shard.breaker.probing = False  # no probe was sent after all
                shard.release()
                return
            if shard.depth():
                shard.first_seen = st.last_scan
            else:
                shard.first_seen = None
                shard.flush_requested = False
            if st.draining and len(items) < shard.batch_size:
                reason = FLUSH_SHUTDOWN  # slots filled up with SKIP by the closing pool
            shard.flushes[reason] += 1
        if st.bench and (
            (st.io_bound and self._more_due()) or (self._watch_vacant() and self._slow())
        ):
            with st.park_lock:
                wake_bench(st)
        box: list[tuple[list[Any], Marks | None, Any]] = [
            (items, marks, None if segment is None else segment.owners)
        ]
        shard.box = box
        _local.shard = shard.index
        self.samples += 1
        if self.samples % SAMPLE_EVERY:
            try:
                st.cfg.handler(items)
            except BaseException as exc:  # noqa: BLE001 - a failing handler is an outcome, not a crash
                error: BaseException | None = exc
            else:
                error = None
        else:
            error = self._call_sampled(shard, items)
        _local.shard = None
        shard.box = None
        shard.batches += 1
        try:
            box.pop()
        except IndexError:  # shutdown gave up on this batch and dead-lettered it already
            shard.release()
            return
        n = len(items)
        if error is None:
            gate = shard.breaker
            if gate is not None and gate.open_until is not None:
                gate.success()
                self.failures.check_all_open()
            elif gate is not None:
                gate.consecutive = 0
            if segment is not None:
                self.failures.succeeded(shard, n, segment.owners)
            else:
                shard.processed += n
                if marks:
                    for completion, count in marks:
                        completion._settle(count, 0)
            done = n
            if born is not None:
                st.h_e2e.observe(st.now() - born, n)
        else:
            owners = segment.owners if segment is not None else owners_of(marks, n)
            done = self.failures.failed(shard, items, owners, segment, error)
        if done:
            self.outcomes.release(shard, done)
        shard.release()

    def _call_sampled(self, shard: Shard, items: list[Any]) -> BaseException | None:
        """Call the handler, timing it: batch-time EMA, and the CPU share of its wall time.

        A computing handler that the GIL preempted looks like one waiting on I/O (long wall
        time, little CPU), so I/O-boundness is judged by the best recent sample.
        """
        st = self.st
        t0, wall0, cpu0 = st.now(), time.perf_counter(), time.thread_time()
        try:
            st.cfg.handler(items)
        except BaseException as exc:  # noqa: BLE001 - a failing handler is an outcome, not a crash
            error: BaseException | None = exc
        else:
            error = None
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        took = st.now() - t0
        st.h_batch.observe(took)
        st.batch_ema += (took - st.batch_ema) * 0.25
        shard.batch_ema += (took - shard.batch_ema) * 0.25
        if wall > 0:
            self.shares.append(min(cpu / wall, 1.0))
            st.io_bound = max(self.shares) < IO_BOUND_BELOW
        return error

    def _watch_vacant(self) -> bool:
        """No sleeping worker watches the clock or the queues (we were the one)."""
        return self.st.timekeeper is None and not self.st.parked

    def _slow(self) -> bool:
        """Handler calls are long, or not measured yet: another worker should keep watch.

        While this worker is in a long call, a benched worker takes the watching role, so
        due batches of other shards are not left waiting for the call to end. Quick calls
        do not need that: this worker is back before anything is overdue.
        """
        st = self.st
        return not self.shares or st.batch_ema * 4 > st.cfg.max_delay

    def _more_due(self) -> bool:
        return any(not s.busy and s.depth() >= s.batch_size for s in self.st.shards)

    def _sleep(self, me: Waiter, deadline: float | None) -> None:
        """Sleep in the first free role (timekeeper, listener), else on the bench."""
        st = self.st
        delay = st.cfg.max_delay
        with st.park_lock:
            if deadline is not None and st.timekeeper is None:
                role = "timekeeper"
                st.timekeeper = me
            elif deadline is None and st.timekeeper is None and not st.parked:
                role = "listener"
                st.parked.append(me)
            else:
                role = "bench"
                st.bench.append(me)
        # Look once more after taking the role: a producer that appended before it could see
        # us asleep will not wake us, so its item must be visible now.
        shard, _, again = self.claim(st.now())
        if shard is not None:
            shard.release()  # the loop claims it again
        elif not st.stopping and again == deadline and not st.pq:
            if deadline is not None:  # the timekeeper
                # Unstamped arrivals are due max_delay after the last scan at the latest.
                timeout: float | None = min(deadline, st.last_scan + delay) - st.now()
            else:
                timeout = None
            st.clock.wait(me.lock, timeout)
        with st.park_lock:
            if role == "timekeeper":
                if st.timekeeper is me:
                    st.timekeeper = None
            elif role == "listener":
                remove(st.parked, me)
            else:
                remove(st.bench, me)
