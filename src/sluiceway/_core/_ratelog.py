"""Log lines about things that can happen thousands of times a second, a few at a time.

A flapping downstream opens and closes breakers and suspends admission over and over; a
failing handler fails every call. Each kind of event gets at most one line every
``every`` seconds (on the pipeline's clock), which says how many were left out since.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RateLog"]

log = logging.getLogger("sluiceway")


class RateLog:
    """At most one line per kind every ``every`` seconds; the rest are counted."""

    def __init__(self, now: Callable[[], float], every: float = 5.0) -> None:
        self.now = now
        self.every = every
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.quiet: dict[str, int] = {}

    def __call__(
        self, kind: str, level: int, message: str, *args: Any, extra: dict[str, Any]
    ) -> None:
        """Log ``message % args`` unless a line of this ``kind`` went out recently."""
        now = self.now()
        with self.lock:
            last = self.last.get(kind)
            if last is not None and now - last < self.every:
                self.quiet[kind] = self.quiet.get(kind, 0) + 1
                return
            self.last[kind] = now
            quiet = self.quiet.pop(kind, 0)
        if quiet:
            message += " (%d more since the last report)"
            args = (*args, quiet)
        log.log(level, message, *args, extra={**extra, "left_out": quiet})
