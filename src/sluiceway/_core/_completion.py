"""Completion handles: learn when every accepted item of one submission has an outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ._ratelog import log

if TYPE_CHECKING:
    import asyncio

__all__ = ["Completion"]


class Completion:
    """The outcome of one tracked submission (``submit_many(..., on_done=...)``).

    ``accepted`` items were admitted; the handle is done once ``processed + dead_lettered``
    reaches it. Callbacks run on the engine thread that settles the last item (keep them
    short), or at once if the handle is already done; whatever a callback raises is logged
    (logger ``"sluiceway"``) and swallowed, as ``concurrent.futures`` does, so that it
    cannot stop the engine. ``await completion`` waits on an asyncio loop without blocking
    it (and returns the handle); ``wait()`` blocks the calling thread.
    """

    __slots__ = (
        "_callbacks",
        "_event",
        "_guard",
        "_lock",
        "accepted",
        "dead_lettered",
        "processed",
    )

    def __init__(self, *, guard: Callable[[], None] | None = None) -> None:
        """``guard``, if given, is called first by ``wait()`` and may raise to refuse it.

        A pipeline whose async handlers run on an event loop passes one that raises on that
        loop's thread, where a blocking wait would stall the very handlers it waits for.
        """
        self.accepted = 0
        self.processed = 0
        self.dead_lettered = 0
        self._guard = guard
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: list[Callable[[Completion], object]] = []

    def __repr__(self) -> str:
        return (
            f"Completion(accepted={self.accepted}, processed={self.processed}, "
            f"dead_lettered={self.dead_lettered}, done={self.done()})"
        )

    def done(self) -> bool:
        """True once every accepted item is processed or dead-lettered."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done (real time); False if ``timeout`` passed first.

        Raises ``SluicewayError`` on the event loop that runs the pipeline's async handlers
        (use ``await completion`` there).
        """
        if self._guard is not None:
            self._guard()
        return self._event.wait(timeout)

    def add_done_callback(self, fn: Callable[[Completion], object]) -> None:
        """Call ``fn(self)`` once done (at once if already done); its errors are logged."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        self._call(fn)

    def __await__(self) -> Generator[Any, None, Completion]:
        """Wait on the running asyncio loop; no thread is blocked meanwhile."""
        import asyncio  # noqa: PLC0415 - asyncio loads only for handles awaited on a loop

        if self._event.is_set():
            return self
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve(_: Completion) -> None:  # on the settling engine thread
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop is closed: nobody awaits any more
                pass

        self.add_done_callback(resolve)
        yield from future.__await__()
        return self

    def _arm(self, accepted: int) -> None:
        """Set the number admitted; a submission that admitted nothing is done at once."""
        self.accepted = accepted
        if accepted == 0:
            self._finish()

    def _settle(self, processed: int, dead: int) -> None:
        with self._lock:
            self.processed += processed
            self.dead_lettered += dead
            finished = self.processed + self.dead_lettered >= self.accepted
        if finished:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._call(fn)

    def _call(self, fn: Callable[[Completion], object]) -> None:
        # Runs on engine threads: nothing a callback raises may escape, not even a
        # BaseException (the thread would die with a shard claimed).
        try:
            fn(self)
        except BaseException:  # noqa: BLE001 - logged: an engine thread must not die
            log.exception("sluiceway: a Completion callback %r raised; ignored", fn)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
