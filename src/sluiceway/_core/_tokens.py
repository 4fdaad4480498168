"""Capacity as a pool of tokens: one atomic ``popleft`` admits an item, with no lock.

A token is what the producer needs next: in an unkeyed pipeline, the ``append`` of the shard
queue the item goes to, so admission and routing are a single C-level deque operation. Tokens
come back in bulk, one ``extend`` per finished batch. Nothing counts items one by one: how
many were admitted is derived from how many tokens are out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from itertools import repeat

__all__ = ["TokenPool"]


class TokenPool:
    """A bounded lane's free capacity."""

    __slots__ = ("_lock", "cleared", "closed", "initial", "returned", "take", "tokens")

    def __init__(self, tokens: Iterable[object]) -> None:
        self.tokens: deque[object] = deque(tokens)
        self.take = self.tokens.popleft  # raises IndexError when the lane is full
        self.initial = len(self.tokens)
        self.returned = 0  # tokens put back while open
        self.cleared = 0  # tokens removed by close()
        self.closed = False
        self._lock = threading.Lock()

    def give_back(self, token: object, count: int) -> None:
        """Return ``count`` copies of ``token`` (a finished batch's worth)."""
        with self._lock:
            if not self.closed:
                self.returned += count
                self.tokens.extend(repeat(token, count))

    def close(self) -> None:
        """Refuse from now on: empty the pool, counting exactly what was removed."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            pop = self.tokens.pop
            cleared = 0
            try:  # each pop is atomic, so a racing producer's pop is never double-counted
                while True:
                    pop()
                    cleared += 1
            except IndexError:
                pass
            self.cleared = cleared

    def granted(self) -> int:
        """How many tokens have ever been taken by producers."""
        with self._lock:
            return self.initial + self.returned - self.cleared - len(self.tokens)

    def free(self) -> int:
        """Tokens available right now."""
        return len(self.tokens)
