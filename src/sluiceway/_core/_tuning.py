"""Process-wide interpreter tuning shared by every running pipeline.

``sys.setswitchinterval`` and ``gc.set_threshold`` act on the whole process, and pipelines
overlap in any order, so no pipeline may restore "its" saved value on its own (the last
one to start would restore what an earlier one set). One lock-protected registry holds the
requests instead: the first holder of a setting saves the interpreter's value; while any
pipeline holds it the most demanding request applies (the smallest switch interval, the
largest gc threshold); when the last holder releases it the saved value is restored.
"""

from __future__ import annotations

import gc
import itertools
import sys
import threading

__all__ = ["hold", "release", "reset_in_child"]

_lock = threading.Lock()
_ids = itertools.count(1)
# Invariant: a saved value is not None exactly while its holders dict is not empty.
_intervals: dict[int, float] = {}  # ticket -> requested switch interval
_thresholds: dict[int, int] = {}  # ticket -> requested gc threshold (generation 0)
_saved_interval: float | None = None
_saved_gc: tuple[int, ...] | None = None


def hold(switch_interval: float | None, gc_threshold: int | None) -> int | None:
    """Register one pipeline's requests and apply them; return its ticket (None: nothing)."""
    global _saved_interval, _saved_gc
    if switch_interval is None and gc_threshold is None:
        return None
    with _lock:
        ticket = next(_ids)
        if switch_interval is not None:
            if not _intervals:
                _saved_interval = sys.getswitchinterval()
            _intervals[ticket] = switch_interval
        if gc_threshold is not None:
            if not _thresholds:
                _saved_gc = gc.get_threshold()
            _thresholds[ticket] = gc_threshold
        _apply()
    return ticket


def release(ticket: int | None) -> None:
    """Drop a ticket's requests (idempotent); restore what no one holds any more."""
    global _saved_interval, _saved_gc
    if ticket is None:
        return
    with _lock:
        had_interval = _intervals.pop(ticket, None) is not None
        had_gc = _thresholds.pop(ticket, None) is not None
        if had_interval and not _intervals and _saved_interval is not None:
            sys.setswitchinterval(_saved_interval)
            _saved_interval = None
        if had_gc and not _thresholds and _saved_gc is not None:
            gc.set_threshold(*_saved_gc)
            _saved_gc = None
        _apply()


def _apply() -> None:
    """Apply the most demanding request of each setting still held. Hold ``_lock``."""
    if _intervals:
        sys.setswitchinterval(min(_intervals.values()))
    if _thresholds and _saved_gc is not None:
        gc.set_threshold(max(_thresholds.values()), *_saved_gc[1:])


def reset_in_child() -> None:
    """In a forked child: the parent's pipelines hold nothing here; restore the values."""
    global _lock, _saved_interval, _saved_gc
    _lock = threading.Lock()  # a parent thread may have held it at fork time
    with _lock:
        _intervals.clear()
        _thresholds.clear()
        if _saved_interval is not None:
            sys.setswitchinterval(_saved_interval)
        if _saved_gc is not None:
            gc.set_threshold(*_saved_gc)
        _saved_interval = _saved_gc = None
