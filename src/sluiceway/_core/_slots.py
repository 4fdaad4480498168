"""Unkeyed queues: producers build whole batches, consumers take them with one pop.

Capacity is minted into *slots*: a slot is a plain list plus the tokens that fill it, all
but the last of them the list's bound ``append``, the last a :class:`Seal` that appends and
then lets a sleeping worker know a batch is full. A producer's ``take()`` + ``call`` puts the
item straight into the batch it will be handled in, so a full batch reaches the handler with
no per-item work on the consumer side, and the list it receives is the list producers filled.

A slot is complete when its list holds ``size`` elements. Tokens that are taken but not used
for an item (a tracked submission queues its items separately; shutdown clears the pool)
append ``SKIP`` instead, so completeness never needs a counter; while ``st.skips`` is
non-zero the cutter filters ``SKIP`` out.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._shard import Shard
    from ._state import State

__all__ = ["SKIP", "Seal", "Slot", "mint"]


class _Skip:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()
"""Stands in a slot for a token that carried no item."""


class Slot:
    """One batch in the making."""

    __slots__ = ("items", "offset", "size")

    def __init__(self, size: int) -> None:
        self.items: list[Any] = []
        self.size = size
        self.offset = 0  # items already handed to a handler by a partial flush

    def complete(self) -> bool:
        """Every token of the slot has been used."""
        return len(self.items) >= self.size


class Seal:
    """A slot's last token: append, then wake the timekeeper if it sleeps."""

    __slots__ = ("__self__", "append", "st")

    def __init__(self, st: State, items: list[Any]) -> None:
        self.st = st
        self.__self__ = items  # like a bound append: the tracked path reads the list
        self.append = items.append

    def __call__(self, item: Any) -> None:
        self.append(item)
        st = self.st
        if st.timekeeper is not None:
            st.wake_timekeeper()


def mint(st: State, shard: Shard, count: int, size: int) -> list[Any]:
    """Open slots on ``shard`` for ``count`` tokens; return the tokens, in order."""
    tokens: list[Any] = []
    slots: deque[Slot] = shard.slots
    while count > 0:
        n = min(size, count)
        slot = Slot(n)
        slots.append(slot)
        items = slot.items
        tokens.extend(repeat(items.append, n - 1))
        tokens.append(Seal(st, items))
        count -= n
    return tokens
