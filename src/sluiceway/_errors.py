"""Every error sluiceway raises, in one tree.

::

    SluicewayError
     ├── ConfigError (also ValueError)        an argument is out of range
     │    └── ConfigTypeError (also TypeError) an argument has the wrong type
     ├── Full (also TimeoutError)             put() found no room before its timeout
     ├── Closed                               the pipeline is shutting down or shut
     ├── InvalidItem (also ValueError)        the key function failed on an item
     ├── Permanent                            raised by a handler: never retry this
     ├── BatchError                           raised by a handler: these items failed
     ├── CircuitOpen                          a client's breaker is open; failing fast
     └── Rejected                             the ingest service refused a request (4xx)

``Permanent`` and ``BatchError`` are raised by *your* handler to steer retries; the engine
raises the others. Catching ``SluicewayError`` catches everything sluiceway raises.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BatchError",
    "CircuitOpen",
    "Closed",
    "ConfigError",
    "ConfigTypeError",
    "Full",
    "InvalidItem",
    "Permanent",
    "Rejected",
    "SluicewayError",
]


class SluicewayError(Exception):
    """The root of every error sluiceway raises."""


class ConfigError(SluicewayError, ValueError):
    """An argument is out of range; the message names the argument."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class ConfigTypeError(ConfigError, TypeError):
    """An argument has the wrong type; the message names the argument."""


class Full(SluicewayError, TimeoutError):
    """``put`` waited ``timeout`` seconds and the item's lane stayed full."""

    def __init__(self, lane: str, timeout: float) -> None:
        super().__init__(f"the {lane} lane stayed full for {timeout:g}s")
        self.lane = lane
        self.timeout = timeout


class Closed(SluicewayError):
    """The pipeline has begun shutting down and admits nothing more."""


class InvalidItem(SluicewayError, ValueError):
    """The key function raised, or returned an unhashable value, for one item.

    Keys are computed before any capacity is taken, so the call that raised admitted
    nothing: not the item at ``index`` (its position in the call's items) and not the items
    before it. The original exception is the ``__cause__``.
    """

    def __init__(self, index: int, item: object, cause: BaseException) -> None:
        super().__init__(
            f"item {index}: the key function failed ({type(cause).__name__}: {cause}); "
            "nothing of this call was admitted"
        )
        self.index = index
        self.item = item


class Permanent(SluicewayError):
    """Raise from a handler to say the batch (or item) must never be retried.

    The items are dead-lettered with reason ``"permanent"`` at once. Chain the real cause:
    ``raise sw.Permanent("bad schema") from exc``.
    """


class BatchError(SluicewayError):
    """Raise from a handler to say which items of its batch failed.

    ``failed`` maps the index of each failed item in the batch to its exception; every other
    item of the batch counts as processed, and only the failed ones are retried. Negative
    indices count from the end, as in Python. If any key is not an int naming an item of
    the batch, the engine cannot tell which items succeeded, so the whole batch counts as
    failed.
    """

    def __init__(self, failed: Mapping[int, BaseException], message: str | None = None) -> None:
        super().__init__(message or f"{len(failed)} item(s) of the batch failed")
        self.failed = dict(failed)


class CircuitOpen(SluicewayError):
    """A client-side circuit breaker is open: the call fails fast without being sent."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit open; next probe in {retry_after:.3f}s")
        self.retry_after = retry_after


class Rejected(SluicewayError):
    """The ingest service answered with a client error (400, 401, 413, 415)."""

    def __init__(self, status: int, body: str, url: str | None = None) -> None:
        where = "" if url is None else f" from {url}"
        super().__init__(f"HTTP {status}{where}: {body[:200]}")
        self.status = status
        self.body = body
        self.url = url
