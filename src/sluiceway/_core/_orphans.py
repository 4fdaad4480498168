"""Pipelines nobody shuts down: dropped ones, those alive at exit, and forked copies.

- A started pipeline that is garbage-collected before ``shutdown()`` gets a
  ``ResourceWarning``, and a background thread (``sluiceway-reaper``) shuts it down: its
  accepted items are drained (for at most its ``drain_timeout``, else ``EXIT_DRAIN_TIMEOUT``)
  and its threads stop. The engine threads hold the engine's state, never the ``Pipeline``,
  so dropping the last reference does make it collectable.
- At interpreter exit (``atexit``) every pipeline still running is shut down the same way,
  and a line is logged (logger ``"sluiceway"``) with what was drained and dead-lettered.
- In a child made by ``os.fork()`` the parent's pipelines have no threads: their
  ``submit``/``submit_many``/``put``/``submit_tracked``/``wait_idle``/``start`` raise
  ``Closed``, and ``shutdown`` returns an empty report at once.
"""

from __future__ import annotations

import atexit
import os
import threading
import warnings
import weakref
from typing import Any, NoReturn

from .._errors import Closed
from .._records import DrainReport
from . import _tuning
from ._lifecycle import Lifecycle, forked_message
from ._ratelog import log

__all__ = ["EXIT_DRAIN_TIMEOUT", "watch"]

EXIT_DRAIN_TIMEOUT = 30.0  # seconds, for pipelines without a drain_timeout


_lock = threading.Lock()
_alive: weakref.WeakSet[Lifecycle] = weakref.WeakSet()  # started, maybe not shut down
_pipelines: weakref.WeakKeyDictionary[Any, Lifecycle] = weakref.WeakKeyDictionary()


def watch(pipeline: Any, life: Lifecycle) -> None:
    """Called once when ``pipeline`` starts: finalizer, exit and fork hooks."""
    with _lock:
        _alive.add(life)
        _pipelines[pipeline] = life
    finalizer = weakref.finalize(pipeline, _dropped, life)
    finalizer.atexit = False  # at exit, _at_exit shuts it down (and logs, not warns)


def _timeout(life: Lifecycle) -> float:
    return EXIT_DRAIN_TIMEOUT if life.drain_timeout is None else life.drain_timeout


def _dropped(life: Lifecycle) -> None:
    """The pipeline was garbage-collected: warn, and shut it down in the background."""
    if life.report is not None or life.closing or life.pid != os.getpid():
        return
    reaper = threading.Thread(target=_reap, args=(life,), name="sluiceway-reaper", daemon=True)
    try:
        warnings.warn(
            "a started sluiceway Pipeline was garbage-collected without shutdown(); it is "
            "being shut down in the background (accepted items are drained first)",
            ResourceWarning,
            stacklevel=2,
        )
    finally:
        reaper.start()


def _reap(life: Lifecycle) -> None:
    try:
        report = life.shutdown(_timeout(life))
    except BaseException:  # noqa: BLE001 - logged: an engine thread must not die
        log.exception("sluiceway: shutting down a dropped pipeline failed")
        return
    _log_report("a pipeline dropped without shutdown()", report.accepted, report)


def _at_exit() -> None:
    """Shut down every pipeline still running, each for at most its drain timeout."""
    for life in list(_alive):
        if not life.started or life.report is not None or life.pid != os.getpid():
            continue
        before = life.outcomes.finished()
        try:
            report = life.shutdown(_timeout(life))
        except BaseException:  # noqa: BLE001 - logged: an engine thread must not die
            log.exception("sluiceway: shutting down a pipeline at exit failed")
            continue
        drained = report.processed + report.dead_lettered - before
        _log_report("a pipeline still running at interpreter exit", drained, report)


def _log_report(what: str, drained: int, report: DrainReport) -> None:
    log.warning(
        "sluiceway: shut down %s: %d items drained; %d processed and %d dead-lettered in "
        "all (%d of them unfinished at the drain timeout)",
        what,
        drained,
        report.processed,
        report.dead_lettered,
        report.unfinished,
    )


def _after_fork_in_child() -> None:
    """The parent's pipelines are copies without threads here: make every use say so."""
    global _lock
    _lock = threading.Lock()
    _tuning.reset_in_child()
    for pipeline, life in list(_pipelines.items()):
        life.forked_from = life.pid
        life.st.closed = True
        refuse = _refuser(forked_message(life.pid))
        pipeline.submit = refuse
        pipeline.submit_many = refuse
    _alive.clear()


def _refuser(message: str) -> Any:
    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise Closed(message)

    return refuse


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
