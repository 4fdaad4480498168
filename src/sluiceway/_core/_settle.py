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
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._policy import Retry
from ._failure import Segment, judge
from ._outcome import Outcomes

if TYPE_CHECKING:
    from ._aio import LoopHost
    from ._shard import Shard

__all__ = ["ABANDONED", "Settle"]

log = logging.getLogger("sluiceway")
LOG_EVERY = 5.0  # seconds between two log lines about failing handler calls


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
        self._log_lock = threading.Lock()
        self._log_at = float("-inf")
        self._log_quiet = 0  # failures not logged since the last line

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
        """Log failing calls, at most one line every LOG_EVERY seconds (never per item)."""
        now = self.outcomes.st.now()
        with self._log_lock:
            if now - self._log_at < LOG_EVERY:
                self._log_quiet += 1
                return
            quiet, self._log_quiet, self._log_at = self._log_quiet, 0, now
        log.warning(
            "handler call failed (%s: %s) on %s with %d items, attempt %d: %s"
            " (%d more failures since the last report)",
            type(error).__name__,
            error,
            "the priority lane" if shard is None else f"shard {shard.index}",
            len(seg.items),
            seg.calls,
            reason or ("calling again" if again else "settled"),
            quiet,
            extra={
                "shard": None if shard is None else shard.index,
                "items": len(seg.items),
                "attempt": seg.calls,
                "outcome": reason or "retry",
            },
        )
