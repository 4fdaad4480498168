"""Capacity as a pool of tokens: one atomic ``popleft`` admits an item, with no lock.

A token is what the producer needs next: in an unkeyed pipeline, the ``append`` of the shard
queue the item goes to, so admission and routing are a single C-level deque operation. Tokens
come back in bulk, one ``extend`` per finished batch. Nothing counts items one by one: how
many were admitted is derived from how many tokens are out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import call

__all__ = ["TokenPool"]


class TokenPool:
    """A bounded lane's free capacity."""

    __slots__ = (
        "_lock",
        "cleared",
        "closed",
        "dropped",
        "held",
        "initial",
        "returned",
        "suspended",
        "take",
        "tokens",
    )

    def __init__(self, tokens: Iterable[object]) -> None:
        self.tokens: deque[object] = deque(tokens)
        self.take = self.tokens.popleft  # raises IndexError when the lane is full
        self.initial = len(self.tokens)
        self.returned = 0  # tokens put back while open
        self.cleared = 0  # tokens removed by close()
        self.dropped = 0  # tokens given back after close (not reissued)
        self.held: list[object] = []  # tokens withheld while suspended (all breakers open)
        self.suspended = False
        self.closed = False
        self._lock = threading.Lock()

    def give_back(self, token: object, count: int, last: object = None) -> None:
        """Return ``count`` tokens: copies of ``token``, the final one ``last`` if given.

        ``last`` is a signalling token (see ``_signal``): one per finished batch, so that
        the producer that takes it checks, once a batch rather than once an item, whether a
        sleeping worker should hear that a batch is full.
        """
        with self._lock:
            if self.closed:
                self.dropped += count
            elif count > 0:
                self.returned += count
                out: list[object] | deque[object] = self.held if self.suspended else self.tokens
                if last is None:
                    out.extend(repeat(token, count))
                else:
                    out.extend(repeat(token, count - 1))
                    out.append(last)

    def give_back_minted(
        self, count: int, mint: Callable[[int, int], list[object]], size: int
    ) -> None:
        """Return capacity as ``mint(count, size)`` fresh tokens (unkeyed slots; ``_slots``)."""
        with self._lock:
            if self.closed:
                self.dropped += count
                return
            self.returned += count
            (self.held if self.suspended else self.tokens).extend(mint(count, size))

    def suspend(self) -> None:
        """Refuse for now (every breaker is open), keeping the tokens for ``resume``."""
        with self._lock:
            if self.closed or self.suspended:
                return
            self.suspended = True
            self._drain_into(self.held)

    def _drain_into(self, out: list[object]) -> None:
        """Move every token to ``out`` in one step no producer can interleave with.

        ``take`` is lock-free, so a Python loop of pops would race with producers and let
        them take tokens from the middle of the pool: slots would then fill out of order,
        and a later slot's items would sit behind an earlier slot that never completes. A
        C-level ``extend`` of C-level pops runs no bytecode, so it holds the GIL throughout.
        """
        tokens = self.tokens
        try:  # list.extend keeps what it got before the pool ran dry
            out.extend(map(call, repeat(tokens.popleft, len(tokens) + 1)))
        except IndexError:
            pass

    def resume(self) -> None:
        """Admit again with the tokens withheld by ``suspend``."""
        with self._lock:
            if not self.suspended:
                return
            self.suspended = False
            self.tokens.extend(self.held)
            self.held = []

    def close(self, before: Callable[[], object] | None = None) -> list[object]:
        """Refuse from now on: empty the pool; return exactly the tokens removed.

        ``before`` runs first under the pool's lock (no minting can come in between).
        """
        with self._lock:
            if self.closed:
                return []
            if before is not None:
                before()
            self.closed = True
            cleared: list[object] = self.held
            self.held = []
            self._drain_into(cleared)
            self.cleared = len(cleared)
            return cleared

    def granted(self) -> int:
        """How many tokens have ever been taken by producers."""
        with self._lock:
            return self.initial + self.returned - self.cleared - len(self.tokens) - len(self.held)

    def out(self) -> int:
        """Tokens taken and not yet given back: the lane's items without an outcome.

        One consistent read, so it never exceeds the pool's size (unlike ``granted()``
        minus outcomes counted at another moment).
        """
        with self._lock:
            return self.initial - self.cleared - len(self.tokens) - len(self.held) - self.dropped

    def free(self) -> int:
        """Tokens available right now."""
        return len(self.tokens)
