"""What happens after a handler raises: retry, isolate, break the circuit, dead-letter.

A failed batch becomes a :class:`Segment` queued on its shard (``shard.pending``) with the
time its backoff ends; no thread waits for it. A keyed shard takes no new batch until its
segments are done, so per-key order holds; an unkeyed shard goes on with new batches and
takes each segment when it is due. Items reach an outcome only once (processed, or
dead-lettered with a reason); capacity comes back only then.
"""

from __future__ import annotations

import math
from typing import Any

from .._errors import BatchError
from .._policy import Breaker, Retry
from ._batch import Marks
from ._completion import Completion
from ._outcome import Outcomes
from ._shard import Shard
from ._state import State

__all__ = ["BreakerState", "Failures", "Segment", "owners_of"]

Owners = list[Completion | None] | None


class Segment:
    """Items of a failed batch waiting for another handler call."""

    __slots__ = ("budget", "calls", "items", "not_before", "owners")

    def __init__(self, items: list[Any], owners: Owners, calls: int, budget: list[int]) -> None:
        self.not_before = 0.0  # no handler call before this (its backoff)
        self.items = items
        self.owners = owners  # the completion of each item, if any item is tracked
        self.calls = calls  # handler calls this segment has had
        self.budget = (
            budget  # isolation segments left for the original batch (shared; -1: none yet)
        )


class BreakerState:
    """One shard's circuit: closed, open until ``open_until``, or half-open (probing)."""

    __slots__ = ("consecutive", "open_until", "policy", "probing")

    def __init__(self, policy: Breaker) -> None:
        self.policy = policy
        self.consecutive = 0
        self.open_until: float | None = None  # None: closed
        self.probing = False

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

    def success(self) -> None:
        """A call succeeded: close."""
        self.consecutive = 0
        self.open_until = None
        self.probing = False

    def failure(self, now: float) -> bool:
        """A call failed; return True if this opened (or re-opened) the circuit."""
        self.consecutive += 1
        was_probe = self.open_until is not None
        self.probing = False
        if was_probe or self.consecutive >= self.policy.failures:
            self.open_until = now + self.policy.cooldown
            return True
        return False


def owners_of(marks: Marks | None, count: int) -> Owners:
    """Expand a batch's run-length completion marks into one entry an item."""
    if not marks:
        return None
    owners: list[Completion | None] = []
    for completion, n in marks:
        owners.extend([completion] * n)
    owners.extend([None] * (count - len(owners)))
    return owners


def _settle(owners: Owners, indices: range | list[int], processed: bool) -> None:
    if owners is None:
        return
    counts: dict[int, tuple[Completion, int]] = {}
    for i in indices:
        c = owners[i]
        if c is not None:
            prev = counts.get(id(c))
            counts[id(c)] = (c, 1 if prev is None else prev[1] + 1)
    for c, n in counts.values():
        c._settle(n, 0) if processed else c._settle(0, n)


class Failures:
    """The failure policy of one pipeline, applied by whichever worker saw the failure."""

    def __init__(
        self, st: State, outcomes: Outcomes, retry: Retry | None, breaker: Breaker | None
    ) -> None:
        self.st = st
        self.outcomes = outcomes
        self.retry = retry
        self.breaker = breaker
        self.retries = 0  # handler calls that were retries (stats)
        if breaker is not None:
            for shard in st.shards:
                shard.breaker = BreakerState(breaker)

    def failed(
        self,
        shard: Shard,
        items: list[Any],
        owners: Owners,
        segment: Segment | None,
        error: BaseException,
    ) -> int:
        """Handle a failed call; return how many items reached an outcome (capacity back)."""
        st = self.st
        if shard.breaker is not None and shard.breaker.failure(st.now()):
            self.check_all_open()
        calls = 1 if segment is None else segment.calls + 1
        budget = [-1] if segment is None else segment.budget  # -1: isolation not started
        retry = self.retry
        done = 0
        if isinstance(error, BatchError) and error.failed:
            ok = [i for i in range(len(items)) if i not in error.failed]
            shard.processed += len(ok)
            _settle(owners, ok, processed=True)
            done += len(ok)
            bad = sorted(i for i in error.failed if 0 <= i < len(items))
            items = [items[i] for i in bad]
            owners = None if owners is None else [owners[i] for i in bad]
            error = next(iter(error.failed.values()))
            if not items:
                return done
        if retry is None:
            self._dead(shard, items, owners, range(len(items)), "handler-error", error, calls)
            return done + len(items)
        if retry.retryable(error) and calls < retry.attempts:
            self._requeue(shard, Segment(items, owners, calls, budget), retry.delay(calls))
            return done
        reason = "retries-exhausted" if retry.retryable(error) else "permanent"
        if retry.isolate and len(items) > 1:
            if budget[0] < 0:
                budget[0] = 2 * math.ceil(math.log2(len(items))) + 2
            if budget[0] >= 2:
                budget[0] -= 2
                half = len(items) // 2
                first = Segment(items[:half], None if owners is None else owners[:half], 0, budget)
                second = Segment(items[half:], None if owners is None else owners[half:], 0, budget)
                shard.pending.appendleft(second)
                shard.pending.appendleft(first)
                return done
        self._dead(shard, items, owners, range(len(items)), reason, error, calls)
        return done + len(items)

    def _requeue(self, shard: Shard, segment: Segment, delay: float) -> None:
        segment.not_before = self.st.now() + delay
        self.retries += 1
        if self.st.cfg.key is not None:
            shard.pending.appendleft(segment)  # keyed: first in line, the shard waits for it
            return
        # Unkeyed: order does not matter, so the shard goes on with new batches meanwhile;
        # pending segments stay sorted by due time.
        pending = shard.pending
        at = len(pending)
        while at and pending[at - 1].not_before > segment.not_before:
            at -= 1
        pending.insert(at, segment)

    def _dead(
        self,
        shard: Shard,
        items: list[Any],
        owners: Owners,
        indices: range,
        reason: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        self.outcomes.dead_batch(shard, items, None, reason, error, attempts)
        _settle(owners, indices, processed=False)

    def succeeded(self, shard: Shard, count: int, owners: Owners) -> None:
        """A retried segment went through."""
        shard.processed += count
        _settle(owners, range(count), processed=True)

    def check_all_open(self) -> None:
        """Refuse admission while every breaker is open; admit again when one is not."""
        st = self.st
        now = st.now()
        all_open = all(
            s.breaker is not None
            and s.breaker.open_until is not None
            and now < s.breaker.open_until
            for s in st.shards
        )
        if all_open != st.suspended:
            st.suspended = all_open
            for pool in st.pools():
                if all_open:
                    pool.suspend()
                else:
                    pool.resume()
