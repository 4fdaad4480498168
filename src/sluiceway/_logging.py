"""Log output of the ``sluiceway`` commands (``--log-level``, ``--log-format text|json``).

The library only logs, through :mod:`logging` (loggers ``sluiceway``, ``sluiceway.serve``,
``sluiceway.nats``...), with machine-readable context in ``extra=`` fields; it never
installs a handler. The commands are applications: :func:`configure` gives the root logger
one stderr handler. In JSON every record is one object a line: ``time`` (UTC, ISO 8601),
``level``, ``logger``, ``message``, then the record's ``extra`` fields (and ``exception``
for a traceback). The choice travels to the worker processes of ``sluiceway serve`` in
``$SLUICEWAY_LOG``, where :func:`configure_from_env` applies it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "configure", "configure_from_env", "say"]

ENV = "SLUICEWAY_LOG"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; whatever else a record carries came from ``extra=``.
_STANDARD = {
    *vars(logging.LogRecord("", 0, "", 0, "", (), None)),
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured duplicate of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The commands' stderr handler (told apart so that configuring twice replaces it)."""


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every logger's records at ``level`` and above to stderr, as ``fmt``.

    For the ``sluiceway`` commands only (never called by the library). Calling it again
    replaces the handler it installed; it also sets ``$SLUICEWAY_LOG`` so that the worker
    processes of ``sluiceway serve`` log the same way.
    """
    if level not in LEVELS:
        raise ValueError(f"level: one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt: one of {', '.join(FORMATS)}, not {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    os.environ[ENV] = f"{level},{fmt}"


def configure_from_env() -> bool:
    """Apply ``$SLUICEWAY_LOG`` (set by :func:`configure` in a parent process), if set."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    level, _, fmt = spec.partition(",")
    configure(level, fmt or "text")
    return True


def say(logger: logging.Logger, level: int, line: str) -> None:
    """A command's one-line failure or warning on stderr: as is, or a JSON record.

    Under ``--log-format json`` every stderr line is JSON, this one too (``message`` is
    ``line``); otherwise it is printed unchanged, whatever the logging set-up.
    """
    if os.environ.get(ENV, "").endswith(",json"):
        logger.log(level, line)
    else:
        print(line, file=sys.stderr)
