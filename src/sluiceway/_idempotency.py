"""Answers to recent ``Idempotency-Key`` requests, bounded in number and in age.

The ingest app claims a request's key before admitting anything. The first request with a
key gets a :class:`Ticket` and must ``finish`` it with the answer it gave (or ``None`` when
it admitted nothing, so that a resend is handled afresh). A repeat gets the stored
:class:`Answer`; a repeat that arrives while the first is still running waits for it.

:class:`IdempotencyStore` lives in one process, on the serving event loop (no locks; one
owner, the ingest app's ``Ingest``). :class:`SharedIdempotencyStore` keeps the same
contract across the worker processes of one ``sluiceway serve`` in a SQLite file, so that a
resend that reaches another worker is recognised too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Answer", "IdempotencyStore", "KeyStore", "SharedIdempotencyStore", "Ticket"]


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer given to the first request with a key."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class KeyStore(Protocol):
    """What the ingest app needs of an idempotency store."""

    def __len__(self) -> int: ...

    async def claim(self, key: str) -> Answer | Ticket:
        """The stored answer for ``key``, or a ticket: this request is the first."""
        ...

    def settle(self, key: str, claim: Any, answer: Answer | None) -> None:
        """Record how the claim of ``key`` was answered (None: forget the key)."""
        ...


class _Entry:
    __slots__ = ("answer", "at", "settled")

    def __init__(self, at: float, settled: asyncio.Future[Answer | None]) -> None:
        self.at = at
        self.answer: Answer | None = None  # None while the first request runs
        self.settled = settled


class Ticket:
    """The first request's duty to say how it answered; ``finish`` exactly once."""

    __slots__ = ("_entry", "_key", "_store")

    def __init__(self, store: KeyStore, key: str, entry: object) -> None:
        self._store = store
        self._key = key
        self._entry = entry

    def finish(self, answer: Answer | None) -> None:
        """Remember ``answer`` for the key (``None``: forget the key) and wake the repeats."""
        self._store.settle(self._key, self._entry, answer)


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

    def settle(self, key: str, entry: _Entry, answer: Answer | None) -> None:
        """Record how the claim of ``key`` was answered (None: forget the key)."""
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


class SharedIdempotencyStore:
    """:class:`IdempotencyStore`'s contract, shared by processes through a SQLite file.

    A claim inserts the key with no answer; the first request's ticket writes the answer
    (or deletes the key). A repeat that finds no answer yet polls every ``poll`` seconds.
    At most ``max_keys`` keys are kept (the newest claims); answers expire ``ttl`` seconds
    after they were given, on the wall clock the processes share. A claim left unanswered
    by a process that died expires ``ttl`` seconds after it was made.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_keys: int,
        ttl: float,
        *,
        poll: float = 0.02,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.max_keys = max_keys
        self.ttl = ttl
        self.poll = poll
        self.now = now
        # Autocommit: every statement is its own short transaction; the file lives in a
        # temporary directory, so durability is not wanted (synchronous=OFF).
        self._db = sqlite3.connect(
            os.fspath(path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA synchronous=OFF")

    @staticmethod
    def create(path: str | os.PathLike[str]) -> None:
        """Create the file and its table (once, before the processes share it)."""
        with contextlib.closing(sqlite3.connect(os.fspath(path))) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "key TEXT NOT NULL UNIQUE, at REAL NOT NULL, answer TEXT)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS answers_at ON answers (at)")
            db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        """Close this process's connection."""
        self._db.close()

    async def claim(self, key: str) -> Answer | Ticket:
        """The stored answer for ``key``, or a ticket: this request is the first."""
        while True:
            now = self.now()
            self._db.execute("DELETE FROM answers WHERE at <= ?", (now - self.ttl,))
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
            if row is None:
                try:
                    cur = self._db.execute(
                        "INSERT INTO answers (key, at, answer) VALUES (?, ?, NULL)", (key, now)
                    )
                except sqlite3.IntegrityError:
                    continue  # another process claimed it just now
                seq = cur.lastrowid
                assert seq is not None
                # Invariant: seq grows with every claim, so at most max_keys rows have a
                # seq above the newest minus max_keys.
                self._db.execute("DELETE FROM answers WHERE seq <= ?", (seq - self.max_keys,))
                return Ticket(self, key, seq)
            if row[0] is not None:
                status, body, headers = json.loads(row[0])
                return Answer(status, body, headers)
            await asyncio.sleep(self.poll)  # the first is still running

    def settle(self, key: str, entry: Any, answer: Answer | None) -> None:
        """Record how the claim of ``key`` was answered (None: forget the key)."""
        if answer is None:
            self._db.execute(
                "DELETE FROM answers WHERE key = ? AND seq = ? AND answer IS NULL", (key, entry)
            )
            return
        text = json.dumps([answer.status, answer.body, answer.headers])
        self._db.execute(
            "UPDATE answers SET answer = ?, at = ? WHERE key = ? AND seq = ?",
            (text, self.now(), key, entry),
        )
