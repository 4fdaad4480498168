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

from itertools import repeat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._shard import Shard
    from ._state import State

__all__ = ["SKIP", "Seal", "Slot", "close_minting", "mint"]


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
    """Mint ``count`` tokens for ``shard``'s slots; return them, in order.

    Tokens go into the shard's open slot until it has ``size`` of them (its last is the
    ``Seal``), then into a new one; so returned capacity always builds batches of the
    current batch size, however little comes back at a time. Call with the pool's lock.
    """
    tokens: list[Any] = []
    while count > 0:
        slot = shard.minting
        if slot is None:
            slot = shard.minting = Slot(size)
            shard.minted = 0
            shard.slots.append(slot)
        n = min(slot.size - shard.minted, count)
        shard.minted += n
        count -= n
        if shard.minted == slot.size:
            tokens.extend(repeat(slot.items.append, n - 1))
            tokens.append(Seal(st, slot.items))
            shard.minting = None
        else:
            tokens.extend(repeat(slot.items.append, n))
    return tokens


def close_minting(shard: Shard) -> None:
    """Shutdown: the open slot gets no more tokens, so it is complete at what it has."""
    slot = shard.minting
    if slot is not None:
        slot.size = shard.minted
        shard.minting = None
