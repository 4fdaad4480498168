"""Answers to recent ``Idempotency-Key`` requests, bounded in number and in age.

The ingest app claims a request's key before admitting anything. The first request with a
key gets a :class:`Ticket` and must ``finish`` it with the answer it gave (or ``None`` when
it admitted nothing, so that a resend is handled afresh). A repeat gets the stored
:class:`Answer`; a repeat that arrives while the first is still running waits for it.

Lives on the serving event loop: no locks, one owner (the ingest app's ``Ingest``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "IdempotencyStore", "Ticket"]


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer given to the first request with a key."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class _Entry:
    __slots__ = ("answer", "at", "settled")

    def __init__(self, at: float, settled: asyncio.Future[Answer | None]) -> None:
        self.at = at
        self.answer: Answer | None = None  # None while the first request runs
        self.settled = settled


class Ticket:
    """The first request's duty to say how it answered; ``finish`` exactly once."""

    __slots__ = ("_entry", "_key", "_store")

    def __init__(self, store: IdempotencyStore, key: str, entry: _Entry) -> None:
        self._store = store
        self._key = key
        self._entry = entry

    def finish(self, answer: Answer | None) -> None:
        """Remember ``answer`` for the key (``None``: forget the key) and wake the repeats."""
        self._store._finish(self._key, self._entry, answer)


class IdempotencyStore:
    """At most ``max_keys`` keys, each kept ``ttl`` seconds after its answer."""

    def __init__(
        self, max_keys: int, ttl: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self.ttl = ttl
        self.now = now
        # Invariant: ordered by ``at``, oldest first (entries are added, or moved to the
        # end when answered, with ``at = now()``), so expiry only looks at the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, key: str) -> Answer | Ticket:
        """The stored answer for ``key``, or a ticket: this request is the first."""
        while True:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(self.now(), asyncio.get_running_loop().create_future())
                self._entries[key] = entry
                while len(self._entries) > self.max_keys:
                    self._entries.popitem(last=False)  # its ticket still wakes its repeats
                return Ticket(self, key, entry)
            if entry.answer is not None:
                return entry.answer
            answer = await asyncio.shield(entry.settled)
            if answer is not None:
                return answer
            # The first admitted nothing and was forgotten: this one goes ahead.

    def _finish(self, key: str, entry: _Entry, answer: Answer | None) -> None:
        if not entry.settled.done():
            entry.settled.set_result(answer)
        if self._entries.get(key) is not entry:
            return  # pushed out or expired meanwhile
        if answer is None:
            del self._entries[key]
            return
        entry.answer = answer
        entry.at = self.now()
        self._entries.move_to_end(key)

    def _expire(self) -> None:
        cutoff = self.now() - self.ttl
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.at > cutoff:
                return
            del self._entries[key]
