"""Dead-letter sinks: where the records of items the engine gave up on go.

A sink is any callable taking ``list[DeadLetter]``. The default keeps them in memory.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._records import DeadLetter

__all__ = ["JsonlDeadLetters", "MemoryDeadLetters"]


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

    def __repr__(self) -> str:
        return f"MemoryDeadLetters(kept={len(self)}, total={self.total}, maxlen={self.maxlen})"

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


def _default_serialize(item: object) -> object:
    return item


class JsonlDeadLetters:
    """Append dead letters to a JSON Lines file, one record a line, flushed per write.

    ``serialize`` turns an item into something ``json`` can encode (default: the item as
    it is). An item that still cannot be encoded is written as its ``repr`` under
    ``item_repr``, never dropped.
    """

    def __init__(
        self, path: str | os.PathLike[str], serialize: Callable[[Any], object] | None = None
    ) -> None:
        self.path = Path(path)
        self.serialize = serialize or _default_serialize
        self._lock = threading.Lock()
        self.written = 0

    def __repr__(self) -> str:
        return f"JsonlDeadLetters(path={str(self.path)!r}, written={self.written})"

    def __call__(self, records: list[DeadLetter]) -> None:
        """Append ``records`` and flush."""
        lines = [self._line(r) for r in records]
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            self.written += len(lines)

    def _line(self, record: DeadLetter) -> str:
        data: dict[str, Any] = {
            "reason": record.reason,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "traceback": record.traceback,
            "attempts": record.attempts,
            "shard": record.shard,
            "timestamp": record.timestamp,
        }
        try:
            data["item"] = self.serialize(record.item)
            return json.dumps(data, default=None) + "\n"
        except Exception:  # noqa: BLE001 - any item must still be written
            data.pop("item", None)
            data["item_repr"] = repr(record.item)
            return json.dumps(data) + "\n"

    def read(self) -> list[dict[str, Any]]:
        """Every record in the file (for tests and tools)."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
