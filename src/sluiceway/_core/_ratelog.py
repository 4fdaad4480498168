"""The engine's logging: it never raises, and frequent events are rate-limited.

A log handler is user code too: one that raises from ``emit`` (``Handler.handle`` does not
catch) must not take down the engine thread that logged, nor leave its shard leased, so
every engine log call goes through :data:`log`, which swallows whatever logging raises.

A flapping downstream opens and closes breakers and suspends admission over and over; a
failing handler fails every call. Each kind of event gets at most one line every
``every`` seconds (on the pipeline's clock), which says how many were left out since.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RateLog", "log"]


class SafeLog:
    """The ``sluiceway`` logger, minus the ability to raise into the engine."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        """``Logger.log``, with anything a handler raises swallowed."""
        try:
            self.logger.log(level, msg, *args, stacklevel=2, **kwargs)
        except BaseException:  # noqa: BLE001 - logging failed: nowhere left to report it
            pass

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at DEBUG."""
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at INFO."""
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at WARNING."""
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR."""
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR with the exception being handled."""
        kwargs.setdefault("exc_info", True)
        self.log(logging.ERROR, msg, *args, **kwargs)

    def critical(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at CRITICAL."""
        self.log(logging.CRITICAL, msg, *args, **kwargs)


log = SafeLog(logging.getLogger("sluiceway"))


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
