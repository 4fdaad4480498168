"""Completion handles: learn when every accepted item of one submission has an outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Completion"]


class Completion:
    """The outcome of one tracked submission (``submit_many(..., on_done=...)``).

    ``accepted`` items were admitted; the handle is done once ``processed + dead_lettered``
    reaches it. Callbacks run on the engine thread that settles the last item (keep them
    short), or at once if the handle is already done.
    """

    __slots__ = ("_callbacks", "_event", "_lock", "accepted", "dead_lettered", "processed")

    def __init__(self) -> None:
        self.accepted = 0
        self.processed = 0
        self.dead_lettered = 0
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
        """Block until done (real time); False if ``timeout`` passed first."""
        return self._event.wait(timeout)

    def add_done_callback(self, fn: Callable[[Completion], object]) -> None:
        """Call ``fn(self)`` once done (at once if already done)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

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
            fn(self)
