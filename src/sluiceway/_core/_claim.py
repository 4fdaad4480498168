"""The scheduler: leases on shards, due times, breakers, and who sleeps and who wakes whom.

Nothing outside this module changes this state. A worker takes a :class:`Lease` on a due
shard (``claim``) with one atomic ``pop`` (no lock: under the GIL, a lock held by a
preempted thread stalls every other), runs at most one handler call under it, and gives it
back with ``unclaim``, the single place that resets what the lease carried: the breaker's
probe mark, the shard's age stamp and flush request. Only the holder of a shard's lease
writes that shard's scheduling fields, so a lease that ran nothing (an empty cut, a
hand-off) cannot leave a half-open breaker marked as probing. Sleeping roles and waiters
are under ``Scheduler.roles``, which producers take only to wake a sleeper.

Sleeping workers take roles, so producers have at most one thread to think about:

- the *listener* sleeps with nothing queued anywhere; it sits in ``parked``, which
  ``submit`` tests for truthiness, and the first arrival wakes it (one slow path an idle
  period, which also stamps the arrival time);
- the *timekeeper* sleeps until the earliest partial batch, backoff or cool-down is due; a
  full batch wakes it early through the slot's ``Seal`` (keyed: the shard's signal token);
- every other sleeping worker is *benched*: woken only when handlers wait on I/O and more
  batches are due than awake workers can take, or by flush, drain and stop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .._policy import Breaker
from ._ratelog import RateLog
from ._shard import FLUSH_MANUAL, FLUSH_SHUTDOWN, FLUSH_SIZE, FLUSH_TIME, RETRY, Shard

if TYPE_CHECKING:
    from ._state import State

__all__ = ["ADOPT", "BreakerState", "Lease", "Scan", "Scheduler", "Signal", "Waiter"]

ADOPT = 5  # the lease's shard is cut off: hand its due batch to a healthy shard


class Waiter:
    """A sleeping thread's wake-up lock: held while nobody has woken it."""

    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> None:
        """Release the sleeper (a second release before it sleeps again is harmless)."""
        try:
            self.lock.release()
        except RuntimeError:
            pass


class BreakerState:
    """One shard's circuit: closed, open until ``open_until``, or half-open (probing)."""

    __slots__ = ("consecutive", "open_until", "policy", "probing")

    def __init__(self, policy: Breaker) -> None:
        self.policy = policy
        self.consecutive = 0
        self.open_until: float | None = None  # None: closed
        self.probing = False  # a lease holds the half-open shard for its probe call

    def allows(self, now: float) -> bool:
        """Whether the shard may call its handler now (half-open lets one probe through)."""
        if self.open_until is None:
            return True
        return now >= self.open_until and not self.probing

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.open_until is None:
            return "closed"
        return "half-open" if now >= self.open_until else "open"

    def record(self, ok: bool, now: float) -> bool:
        """A call's result; return True if the state changed (opened, re-opened, closed)."""
        if ok:
            changed = self.open_until is not None
            self.consecutive = 0
            self.open_until = None
            return changed
        self.consecutive += 1
        if self.open_until is not None or self.consecutive >= self.policy.failures:
            self.open_until = now + self.policy.cooldown
            return True
        return False


class Signal:
    """Keyed pipelines: one token in each batch's worth; its taker checks for a full batch."""

    __slots__ = ("index", "sched", "shard")

    def __init__(self, sched: Scheduler, shard: Shard) -> None:
        self.sched = sched
        self.shard = shard
        self.index = shard.index

    def check(self) -> None:
        """Wake the timekeeper if this token's shard now holds a full batch."""
        sched = self.sched
        if sched.timekeeper is not None and self.shard.depth() >= sched.st.batch_sizes[self.index]:
            sched.batch_full()


class Lease:
    """The right to run at most one handler call for one shard."""

    __slots__ = ("cut", "epoch", "probe", "reason", "rest_since", "result", "shard")

    def __init__(self, shard: Shard, reason: int, probe: bool, epoch: int) -> None:
        self.shard = shard
        self.epoch = epoch  # flush requests up to this one are served by this lease
        self.reason = reason
        self.probe = probe  # this lease's call is a half-open breaker's probe
        self.result: bool | None = None  # the call's result; None: no call was made
        self.cut = False  # a batch was cut from the shard's queues
        self.rest_since: float | None = None  # age stamp for what the cut left behind


class Scan:
    """One worker's place in the round of shards (each worker keeps its own)."""

    __slots__ = ("cursor",)

    def __init__(self) -> None:
        self.cursor = 0


class Scheduler:
    """Owns leases, due times, breakers, sleeping roles and room/idle waiters."""

    def __init__(self, st: State, breaker: Breaker | None) -> None:
        self.st = st
        n = len(st.shards)
        # A lease is taken with an atomic ``free[i].pop()`` and given back with an append:
        # of two workers racing for a shard, exactly one gets it, and no lock is held.
        self.free = [[True] for _ in range(n)]
        # Written only by the holder of shard i's lease (a scan that stamps a shard's age
        # takes the lease for that moment):
        self.first_seen: list[float | None] = [None] * n  # oldest queued item first seen
        self.flush_done = [0] * n  # flush requests up to this epoch are served
        self.breakers = [None if breaker is None else BreakerState(breaker) for _ in range(n)]
        self.flush_lock = threading.Lock()
        self.flush_epoch = 0  # flush(): shards with queued items are due while it is ahead
        self.suspend_lock = threading.Lock()  # admission suspended: rare, on breaker changes
        self.suspended = False  # every breaker open: the pools withhold their tokens
        self.ratelog = RateLog(st.now)
        # The latest scan (or listener wake-up): arrivals after it were seen by nobody. Every
        # scan writes it, with no lock: a racing writer can only move it back by a scan's
        # length, which makes a stamp earlier (a partial batch goes early), never later.
        self.last_scan = st.now()
        self.roles = threading.Lock()  # sleeping roles and waiters (producers touch these)
        # Sleeping workers by role. Producers test ``parked`` (truthiness, no lock).
        self.parked: deque[Waiter] = deque()
        self.timekeeper: Waiter | None = None
        self.bench: deque[Waiter] = deque()
        self.room_waiters: list[Any] = []  # put() waiting for capacity
        self.idle_waiters: list[Any] = []  # wait_idle() waiting for outcomes

    def busy(self, i: int) -> bool:
        """Whether shard ``i`` is leased right now."""
        return not self.free[i]

    # -- leases -----------------------------------------------------------------------------
    def claim(self, now: float, view: Scan) -> tuple[Lease | None, float | None]:
        """Lease the next shard with work due, or say when some will be due."""
        st = self.st
        if st.stopping:
            return None, None
        if self.suspended:
            self._check_all_open(now)  # a cool-down may have ended
        delay = st.cfg.max_delay
        draining = st.draining
        keyed = st.cfg.key is not None
        sizes = st.batch_sizes
        shards = st.shards
        free = self.free
        epoch = self.flush_epoch
        n = len(shards)
        start = view.cursor
        seen_since = self.last_scan  # anything unstamped arrived after this
        self.last_scan = now
        deadline: float | None = None
        for k in range(n):
            i = (start + k) % n
            if not free[i]:
                continue
            shard = shards[i]
            gate = self.breakers[i]
            reason = -1
            if gate is not None and not gate.allows(now):
                if gate.open_until is not None and now < gate.open_until:
                    deadline = _sooner(deadline, gate.open_until)
                    if not keyed and self._adoptable(shard, now, seen_since, epoch):
                        reason = ADOPT
                if reason < 0:
                    continue
            elif shard.inbox:
                reason = RETRY
            elif shard.pending:
                due_at = shard.pending[0].not_before
                if now >= due_at:
                    reason = RETRY
                else:
                    deadline = _sooner(deadline, due_at)
                    if keyed:
                        continue  # keyed: nothing may overtake the segment
            if reason < 0:
                depth = shard.depth()
                if not depth:
                    continue
                if depth >= sizes[i] or (shard.slots is not None and shard.slots.ready()):
                    reason = FLUSH_SIZE
                elif draining:
                    reason = FLUSH_SHUTDOWN
                elif epoch > self.flush_done[i]:
                    reason = FLUSH_MANUAL
                else:
                    first = self._stamp(i, seen_since)
                    if first is None or now < first + delay:
                        if first is not None:
                            deadline = _sooner(deadline, first + delay)
                        continue
                    reason = FLUSH_TIME
            try:
                free[i].pop()  # atomic: of two racing workers, one gets the shard
            except IndexError:
                continue
            if self.first_seen[i] is None and reason != RETRY:
                self.first_seen[i] = seen_since  # its items arrived after our last scan
            probe = reason != ADOPT and gate is not None and gate.open_until is not None
            if probe:
                gate.probing = True  # type: ignore[union-attr]
            view.cursor = (i + 1) % n
            return Lease(shard, reason, probe, epoch), None
        return None, deadline

    def _stamp(self, i: int, seen_since: float) -> float | None:
        """Shard ``i``'s age stamp, stamping it now if it has none (None: leased meanwhile)."""
        first = self.first_seen[i]
        if first is not None:
            return first
        try:
            self.free[i].pop()  # a moment's lease: only a holder writes the stamp
        except IndexError:
            return None
        try:
            first = self.first_seen[i]
            if first is None:
                self.first_seen[i] = first = seen_since
        finally:
            self.free[i].append(True)
        return first

    def unclaim(self, lease: Lease, now: float) -> None:
        """End a lease: record its call's result, reset everything it carried."""
        i = lease.shard.index
        try:
            if lease.cut:
                self.first_seen[i] = lease.rest_since
                if lease.rest_since is None and lease.epoch > self.flush_done[i]:
                    self.flush_done[i] = lease.epoch
            gate = self.breakers[i]
            if gate is not None:
                gate.probing = False
                if lease.result is not None and gate.record(lease.result, now):
                    self._breaker_changed(i, gate, now)
        finally:
            self.free[i].append(True)  # last, whatever happened: the lease ends here
        if self.room_waiters or self.idle_waiters:
            self.wake_waiters()

    def _adoptable(self, sick: Shard, now: float, seen_since: float, epoch: int) -> bool:
        """A cut-off shard has a due batch and a healthy shard could take it."""
        if not sick.depth():
            return False
        i = sick.index
        due = (
            (sick.slots is not None and sick.slots.ready())
            or self.st.draining
            or epoch > self.flush_done[i]
        )
        if not due:
            first = self._stamp(i, seen_since)
            due = first is not None and now >= first + self.st.cfg.max_delay
        return due and any(g is None or g.allows(now) for g in self.breakers)

    def healthy(self, now: float, besides: Shard) -> Shard | None:
        """The least loaded shard whose breaker lets calls through (for hand-offs)."""
        ok = [
            s
            for s, g in zip(self.st.shards, self.breakers, strict=True)
            if s is not besides and (g is None or g.allows(now))
        ]
        return min(ok, key=lambda s: s.depth()) if ok else None

    def open_to_work(self, shard: Shard) -> bool:
        """Whether ``shard``'s breaker lets calls through now (a read; no lock needed)."""
        gate = self.breakers[shard.index]
        return gate is None or gate.allows(self.st.now())

    def breaker_state(self, i: int, now: float) -> str:
        """``closed``, ``open`` or ``half-open`` for shard ``i``."""
        gate = self.breakers[i]
        return "closed" if gate is None else gate.state(now)

    def _breaker_changed(self, i: int, gate: BreakerState, now: float) -> None:
        state = gate.state(now)
        self.ratelog(
            f"breaker-{i}",
            logging.WARNING if state == "open" else logging.INFO,
            "circuit breaker of shard %d is %s",
            i,
            state,
            extra={"shard": i, "breaker": state},
        )
        self._check_all_open(now)

    def _check_all_open(self, now: float) -> None:
        """Refuse admission while every breaker is open; admit again when one is not."""
        with self.suspend_lock:
            all_open = all(
                g is not None and g.open_until is not None and now < g.open_until
                for g in self.breakers
            )
            if all_open == self.suspended:
                return
            self.suspended = all_open
            for pool in self.st.pools():
                if all_open:
                    pool.suspend()
                else:
                    pool.resume()
        self.ratelog(
            "admission",
            logging.WARNING,
            "admission %s: %s",
            "suspended" if all_open else "resumed",
            "every breaker is open" if all_open else "a breaker lets calls through",
            extra={"suspended": all_open},
        )

    # -- requests from outside ---------------------------------------------------------------
    def ask_flush(self) -> None:
        """Every shard with queued items is due now (``Pipeline.flush``)."""
        with self.flush_lock:
            self.flush_epoch += 1
        self.wake_all()

    def drain(self) -> None:
        """Shutdown began: every partial batch is due (set before the pools close)."""
        self.st.draining = True

    def stop(self) -> None:
        """No lease is granted from now on; engine threads leave their loops."""
        self.st.stopping = True
        self.wake_all()
        self.st.wake_lane()

    # -- sleeping and waking -----------------------------------------------------------------
    def sleep(self, me: Waiter, deadline: float | None, view: Scan) -> Lease | None:
        """Sleep in the first free role, or return a lease that came due meanwhile."""
        st = self.st
        with self.roles:
            if deadline is not None and self.timekeeper is None:
                role = 0
                self.timekeeper = me
            elif deadline is None and self.timekeeper is None and not self.parked:
                role = 1
                self.parked.append(me)
            else:
                role = 2
                self.bench.append(me)
        # Look once more with the role taken: a producer that appended before it could see
        # us asleep will not wake us, so its item must be visible now.
        now = st.now()
        lease, again = self.claim(now, view)
        # Sleep only in a role that still fits: a timekeeper with nothing timed to wait for
        # (or a listener that now has a deadline) looks again and takes the right role.
        fits = role == 2 or (again is None) == (role == 1)
        if lease is None and fits and not st.stopping and not st.pq:
            # Unstamped arrivals are due max_delay after this scan at the latest.
            timeout = None if again is None else min(again - now, st.cfg.max_delay)
            st.clock.wait(me.lock, timeout)
        with self.roles:
            self._leave(role, me)
        return lease

    def _leave(self, role: int, me: Waiter) -> None:
        if role == 0:
            if self.timekeeper is me:
                self.timekeeper = None
        elif role == 1:
            _remove(self.parked, me)
        else:
            _remove(self.bench, me)

    def _wake_role(self) -> bool:
        """Wake the timekeeper, else the listener. Hold ``self.roles``."""
        waiter = self.timekeeper
        if waiter is not None:
            self.timekeeper = None
        elif self.parked:
            waiter = self.parked.popleft()
            self.last_scan = self.st.now()  # later arrivals are unstamped: scans cover them
        else:
            return False
        waiter.wake()
        return True

    def arrived(self) -> None:
        """Slow path of ``submit``, taken only while the listener sleeps: wake it."""
        with self.roles:
            if self.parked:
                self._wake_role()

    def batch_full(self) -> None:
        """A batch is full: wake the timekeeper, if one sleeps (``Seal`` and signal tokens).

        Even while a worker is awake between batches: its scan may take another shard and
        then block in that handler call, and the timekeeper may sleep until a far deadline.
        """
        if self.timekeeper is not None:
            with self.roles:
                self._wake_role()

    def wake_bench(self) -> None:
        """Wake one benched worker."""
        with self.roles:
            if self.bench:
                self.bench.popleft().wake()

    def wake_all(self) -> None:
        """Wake every sleeping worker (flush, drain, stop)."""
        with self.roles:
            while self._wake_role():
                pass
            while self.bench:
                self.bench.popleft().wake()

    # -- room and idle waiters -----------------------------------------------------------------
    def add_waiter(self, waiters: list[Any], waiter: Any) -> None:
        """Register a ``put`` (room) or ``wait_idle`` (idle) waiter."""
        with self.roles:
            waiters.append(waiter)

    def remove_waiter(self, waiters: list[Any], waiter: Any) -> None:
        """A waiter gives up (timed out): forget it, whether or not it was woken."""
        with self.roles:
            try:
                waiters.remove(waiter)
            except ValueError:
                pass

    def wake_waiters(self) -> None:
        """Capacity came back or outcomes were counted: wake every room and idle waiter."""
        with self.roles:
            woken = self.room_waiters + self.idle_waiters
            self.room_waiters.clear()
            self.idle_waiters.clear()
        for w in woken:
            w.wake()


def _sooner(deadline: float | None, at: float) -> float:
    return at if deadline is None or at < deadline else deadline


def _remove(waiters: deque[Waiter], waiter: Waiter) -> None:
    try:
        waiters.remove(waiter)
    except ValueError:
        pass
