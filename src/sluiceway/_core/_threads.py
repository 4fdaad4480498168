"""Which pipeline's engine thread is running this code, if any.

An engine thread (worker, priority lane) runs user code: handlers, ``on_done`` callbacks,
dead-letter sinks. Some calls must not be made from there (``shutdown()`` would wait for
the very thread that calls it), so each engine thread marks itself when it starts.
"""

from __future__ import annotations

import threading

__all__ = ["in_engine_thread", "mark_engine_thread"]

_local = threading.local()


def mark_engine_thread(owner: object) -> None:
    """Record that the calling thread is an engine thread of ``owner`` (its ``State``).

    Call it first thing in every engine thread's run function.
    """
    _local.owner = owner


def in_engine_thread(owner: object) -> bool:
    """True when the calling thread was marked as an engine thread of ``owner``."""
    return getattr(_local, "owner", None) is owner
