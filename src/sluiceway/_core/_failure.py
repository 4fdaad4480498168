"""What happens after a handler raises: retry, isolate, or dead-letter (the decisions only).

A failed batch becomes a :class:`Segment` with the time its backoff ends; no thread waits
for it. Regular segments queue on their shard (``shard.pending``, see ``requeue``): a keyed
shard takes no new batch until its segments are done, so per-key order holds; an unkeyed
shard goes on with new batches and takes each segment when it is due. Priority segments
wait in the lane's own heap. The breaker's state is not here: it belongs to the lease
(``_claim``), which learns each call's result when the lease ends.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._errors import BatchError
from .._policy import Retry
from ._batch import Marks
from ._completion import Completion

__all__ = ["Owners", "Segment", "Verdict", "judge", "owners_of", "requeue"]

Owners = list[Completion | None] | None


class Segment:
    """Items on their way through one handler call: a batch, a retry, a half, a priority item.

    ``calls`` counts the handler calls the items already had; ``budget`` is shared by the
    halves of one batch under isolation (-1: isolation not started); ``born`` is when the
    batch's oldest item was first seen (None when not measured).
    """

    __slots__ = ("born", "budget", "calls", "items", "not_before", "owners")

    def __init__(
        self,
        items: list[Any],
        owners: Owners = None,
        calls: int = 0,
        budget: list[int] | None = None,
        born: float | None = None,
    ) -> None:
        self.items = items
        self.owners = owners  # the completion of each item, if any item is tracked
        self.calls = calls
        self.budget = [-1] if budget is None else budget
        self.not_before = 0.0  # no handler call before this (its backoff)
        self.born = born

    def depth(self) -> int:
        """Items in the segment."""
        return len(self.items)

    def part(self, indices: list[int]) -> Segment:
        """A segment of the items at ``indices`` (same call count and budget)."""
        items = self.items
        owners = None if self.owners is None else [self.owners[i] for i in indices]
        return Segment([items[i] for i in indices], owners, self.calls, self.budget)


def owners_of(marks: Marks | None, count: int) -> Owners:
    """Expand a batch's run-length completion marks into one entry an item."""
    if not marks:
        return None
    owners: list[Completion | None] = []
    for completion, n in marks:
        owners.extend([completion] * n)
    owners.extend([None] * (count - len(owners)))
    return owners


@dataclass
class Verdict:
    """What to do with a failed segment's items: each lands in exactly one field."""

    ok: Segment | None = None  # processed after all (the rest of a BatchError)
    again: list[Segment] = field(default_factory=list)  # call again (retry or halves)
    dead: Segment | None = None
    reason: str = ""
    error: BaseException | None = None


def judge(retry: Retry | None, seg: Segment, error: BaseException, now: float) -> Verdict:
    """Decide the fate of ``seg`` whose handler call (its ``seg.calls``-th) raised ``error``."""
    verdict = Verdict(error=error)
    calls = seg.calls
    if isinstance(error, BatchError) and error.failed:
        n = len(seg.items)
        bad = _indices(error.failed, n)
        if bad is None:  # an index that names no item: the whole call counts as failed
            bad = list(range(n))
        bad_set = set(bad)
        ok = [i for i in range(n) if i not in bad_set]
        if ok:
            verdict.ok = seg.part(ok)
        if not bad:
            return verdict
        first = next(iter(error.failed.values()))
        error = first if isinstance(first, BaseException) else error
        verdict.error = error
        seg = seg.part(bad)
    if retry is None:
        verdict.dead, verdict.reason = seg, "handler-error"
        return verdict
    if retry.retryable(error) and calls < retry.attempts:
        seg.not_before = now + retry.delay(calls)
        verdict.again.append(seg)
        return verdict
    reason = "retries-exhausted" if retry.retryable(error) else "permanent"
    budget = seg.budget
    if retry.isolate and len(seg.items) > 1:
        if budget[0] < 0:
            budget[0] = 2 * math.ceil(math.log2(len(seg.items))) + 2
        if budget[0] >= 2:
            budget[0] -= 2
            half = len(seg.items) // 2
            for indices in (list(range(half)), list(range(half, len(seg.items)))):
                piece = seg.part(indices)
                piece.calls = 0
                verdict.again.append(piece)
            return verdict
    verdict.dead, verdict.reason = seg, reason
    return verdict


def _indices(failed: Any, n: int) -> list[int] | None:
    """The failed items' positions (negative ones count from the end, as in Python), sorted.

    None if any key is not an int naming an item of the batch: then nobody can tell which
    items succeeded, so none is counted processed.
    """
    positions: set[int] = set()
    for i in failed:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            return None
        positions.add(i % n)
    return sorted(positions)


def requeue(pending: deque[Any], segments: list[Segment], keyed: bool) -> None:
    """Queue segments to call again on the holder's own shard.

    Keyed: first in line, in order (the shard waits for them). Unkeyed: sorted by due time,
    so the shard goes on with new batches meanwhile.
    """
    if keyed:
        for seg in reversed(segments):
            pending.appendleft(seg)
        return
    for seg in segments:
        at = len(pending)
        while at and pending[at - 1].not_before > seg.not_before:
            at -= 1
        pending.insert(at, seg)
