"""The one way the engine calls user handlers and settles what they did.

Regular batches, retries, isolation halves and priority items all go through
:meth:`Settle.call`: each call's segment is registered in flight (a one-element box), so a
shutdown that gives up can dead-letter it, and whoever pops the box decides the outcome.
:meth:`Settle.settle` then applies the failure policy and hands every item to exactly one
outcome (``_outcome``), or back to its caller to be called again.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._policy import Retry
from ._failure import Segment, judge
from ._outcome import Outcomes
from ._ratelog import RateLog

if TYPE_CHECKING:
    from ._aio import LoopHost
    from ._shard import Shard

__all__ = ["ABANDONED", "Settle"]


class _Abandoned(Exception):
    """Marks a call whose outcome shutdown already decided."""


ABANDONED = _Abandoned("abandoned at a shutdown timeout")
Entry = tuple["Shard | None", Segment]


class Settle:
    """Handler calls in flight, and the outcome of every call."""

    def __init__(self, outcomes: Outcomes, retry: Retry | None, host: LoopHost) -> None:
        self.outcomes = outcomes
        self.retry = retry
        self.host = host
        self.inflight: dict[int, list[Entry]] = {}
        self.retries = 0  # handler calls scheduled as retries (stats)
        self.ratelog = RateLog(outcomes.st.now)

    def call(
        self, fn: Callable[[Any], object], arg: Any, shard: Shard | None, seg: Segment
    ) -> BaseException | None:
        """Call ``fn(arg)`` for ``seg``; the error it raised, None, or ``ABANDONED``.

        A plain function that returns an awaitable (a lambda around an ``async def``) has it
        awaited on the pipeline's event loop: returning it unawaited would count items
        processed although nothing ran.
        """
        seg.calls += 1
        box: list[Entry] = [(shard, seg)]
        key = id(box)
        self.inflight[key] = box
        try:
            result = fn(arg)
            if result is not None and inspect.isawaitable(result):
                self.host.run(result)
        except BaseException as exc:  # noqa: BLE001 - a failing handler is an outcome, not a crash
            error: BaseException | None = exc
        else:
            error = None
        del self.inflight[key]
        try:
            box.pop()
        except IndexError:  # shutdown gave up on this call and dead-lettered it already
            return ABANDONED
        return error

    def abandon(self) -> list[Entry]:
        """Take every call in flight away from its caller (shutdown gave up waiting)."""
        taken: list[Entry] = []
        for box in list(self.inflight.values()):
            try:
                taken.append(box.pop())
            except IndexError:
                continue
        return taken

    def settle(
        self, shard: Shard | None, seg: Segment, error: BaseException | None, now: float
    ) -> list[Segment]:
        """Give each item of ``seg`` its outcome; return the segments to call again."""
        if error is None:
            self.outcomes.processed(shard, seg)
            return []
        verdict = judge(self.retry, seg, error, now)
        if verdict.ok is not None:
            self.outcomes.processed(shard, verdict.ok)
        if verdict.dead is not None:
            self.outcomes.dead(shard, verdict.dead, verdict.reason, verdict.error)
        again = verdict.again
        if again and again[0].calls:
            self.retries += 1
        self._note(shard, seg, error, verdict.reason, len(again))
        return again

    def _note(
        self, shard: Shard | None, seg: Segment, error: BaseException, reason: str, again: int
    ) -> None:
        """Log failing calls, a line every few seconds at most (never per item)."""
        where = "the priority lane" if shard is None else f"shard {shard.index}"
        self.ratelog(
            "handler-error",
            logging.WARNING,
            "handler call failed (%s) on %s with %d items, attempt %d: %s",
            type(error).__name__,
            where,
            len(seg.items),
            seg.calls,
            reason or ("calling again" if again else "settled"),
            extra={
                "shard": None if shard is None else shard.index,
                "items": len(seg.items),
                "attempt": seg.calls,
                "outcome": reason or "retry",
            },
        )
