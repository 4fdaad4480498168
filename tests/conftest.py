"""Shared fixtures: a fake clock and a recording handler."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sluiceway.testing import FakeClock

WAIT = 10.0  # real seconds a test waits for engine threads before failing


class Recorder:
    """A batch handler that records every call and can be told to fail or to block."""

    def __init__(self) -> None:
        """Start with no calls recorded, not failing, not blocking."""
        self.batches: list[list[Any]] = []
        self.priority: list[Any] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.fail: BaseException | None = None
        self.gate: threading.Event | None = None  # when set: calls wait on it
        self.entered = threading.Event()

    def __call__(self, batch: list[Any]) -> None:
        """Record ``batch`` (after the gate opens), or raise ``fail``."""
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        with self.changed:
            self.batches.append(list(batch))
            self.changed.notify_all()

    def on_priority(self, item: Any) -> None:
        """A priority handler that records the item."""
        with self.changed:
            self.priority.append(item)
            self.changed.notify_all()

    @property
    def items(self) -> list[Any]:
        """Every item handled, in call order."""
        with self.lock:
            return [x for b in self.batches for x in b]

    def wait_items(self, count: int, timeout: float = WAIT) -> bool:
        """Block until at least ``count`` items were handled."""
        with self.changed:
            return self.changed.wait_for(lambda: sum(map(len, self.batches)) >= count, timeout)

    def wait_priority(self, count: int, timeout: float = WAIT) -> bool:
        """Block until at least ``count`` priority items were handled."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.priority) >= count, timeout)


@pytest.fixture(autouse=True)
def _root_log_handlers() -> Iterator[None]:
    """Take off root log handlers a test left behind (the CLI installs them; the library never).

    Otherwise a later test would log to a stream pytest has closed.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock at t=0."""
    return FakeClock()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A recording handler; any gate is opened at teardown so threads can finish."""
    rec = Recorder()
    yield rec
    if rec.gate is not None:
        rec.gate.set()
