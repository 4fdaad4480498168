"""Dead-letter sinks: where the records of items the engine gave up on go.

A sink is any callable taking ``list[DeadLetter]``. The default keeps them in memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from ._records import DeadLetter

__all__ = ["MemoryDeadLetters"]


class MemoryDeadLetters:
    """Keep dead letters in memory, the newest ``maxlen`` of them.

    Memory stays bounded: past ``maxlen`` the oldest records are let go, and ``overflow``
    counts them (the items still count as dead-lettered in stats). Use a durable sink
    such as ``JsonlDeadLetters`` where every record must be kept.
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        self._records: deque[DeadLetter] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.maxlen = maxlen
        self.total = 0

    def __call__(self, records: list[DeadLetter]) -> None:
        """Store ``records``."""
        with self._lock:
            self._records.extend(records)
            self.total += len(records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(self.records())

    def __getitem__(self, index: int) -> DeadLetter:
        return self.records()[index]

    @property
    def overflow(self) -> int:
        """Records let go because more than ``maxlen`` arrived."""
        return self.total - len(self._records)

    def records(self) -> list[DeadLetter]:
        """A copy of the kept records, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget the kept records (``total`` keeps counting)."""
        with self._lock:
            self._records.clear()
