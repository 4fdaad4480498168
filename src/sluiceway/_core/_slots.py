"""Unkeyed capacity and batches: minting, filling, cutting, skipping and closing slots.

Capacity is minted into *slots*: a slot is a plain list plus the tokens that fill it, all
but the last of them the list's bound ``append``, the last a :class:`Seal` that appends and
then lets a sleeping worker know a batch is full. A producer's ``take()`` + call puts the
item straight into the batch it will be handled in, so a full batch reaches the handler with
no per-item work on the consumer side.

A slot is complete when its list holds ``size`` elements. Tokens that are taken but carry
no item (a tracked submission queues its items as chunks instead; shutdown clears the pool)
append ``SKIP``, so completeness never needs a counter; while ``Skips.count`` is non-zero
the cutter filters ``SKIP`` out.

Ownership: slots are minted on the right under the shard pool's lock (whoever gives
capacity back), filled by producers through their tokens (atomic ``list.append``), and cut
on the left only by the holder of the shard's lease.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

__all__ = ["SKIP", "Seal", "Skips", "Slot", "Slots"]


class _Skip:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()
"""Stands in a slot for a token that carried no item."""


class Skips:
    """How many ``SKIP`` markers sit in slots, pipeline-wide (rare: tracked and shutdown)."""

    __slots__ = ("count", "lock")

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        """``n`` markers are about to be appended (counted first, so cutters filter them)."""
        with self.lock:
            self.count += n

    def drop(self, batch: list[Any]) -> list[Any]:
        """``batch`` without its markers."""
        kept = [x for x in batch if x is not SKIP]
        if len(kept) != len(batch):
            with self.lock:
                self.count -= len(batch) - len(kept)
        return kept


class Slot:
    """One batch in the making."""

    __slots__ = ("items", "offset", "size")

    def __init__(self, size: int) -> None:
        self.items: list[Any] = []
        self.size = size
        self.offset = 0  # items already cut by a partial flush or a split

    def complete(self) -> bool:
        """Every token of the slot has been used."""
        return len(self.items) >= self.size


class Seal:
    """A slot's last token: append, then tell the scheduler a batch is full."""

    __slots__ = ("append", "full")

    def __init__(self, items: list[Any], full: Callable[[], None]) -> None:
        self.append = items.append
        self.full = full

    def __call__(self, item: Any) -> None:
        self.append(item)
        self.full()


class Slots:
    """The slots of one unkeyed shard, oldest first."""

    __slots__ = ("full", "minted", "minting", "queue", "skips")

    def __init__(self, skips: Skips, full: Callable[[], None]) -> None:
        self.queue: deque[Slot] = deque()
        self.minting: Slot | None = None  # the slot still getting tokens
        self.minted = 0  # tokens minted for it so far
        self.skips = skips
        self.full = full  # called by each Seal: wakes the timekeeper if one sleeps

    # -- minting (under the pool's lock) -----------------------------------------------------
    def mint(self, count: int, size: int) -> list[Any]:
        """Mint ``count`` tokens, in order, into slots of ``size`` (the last one open)."""
        tokens: list[Any] = []
        while count > 0:
            slot = self.minting
            if slot is None:
                slot = self.minting = Slot(size)
                self.minted = 0
                self.queue.append(slot)
            n = min(slot.size - self.minted, count)
            self.minted += n
            count -= n
            if self.minted == slot.size:
                tokens.extend(repeat(slot.items.append, n - 1))
                tokens.append(Seal(slot.items, self.full))
                self.minting = None
            else:
                tokens.extend(repeat(slot.items.append, n))
        return tokens

    def close(self) -> None:
        """Shutdown: the open slot gets no more tokens, so it is complete at what it has."""
        slot = self.minting
        if slot is not None:
            slot.size = self.minted
            self.minting = None

    # -- reading (any thread) ------------------------------------------------------------------
    def depth(self) -> int:
        """Items in the two oldest slots not yet cut (an estimate, cheap enough to poll)."""
        queue = self.queue
        if not queue:
            return 0
        head = queue[0]
        depth = len(head.items) - head.offset
        if len(queue) > 1:
            depth += len(queue[1].items)
        return depth

    def ready(self) -> bool:
        """The oldest slot is complete: a whole batch can be cut now."""
        queue = self.queue
        return bool(queue) and len(queue[0].items) >= queue[0].size

    def backlog(self) -> int:
        """Items in slots not yet cut, counted exactly."""
        queued = 0
        skips = self.skips.count
        for slot in list(self.queue):
            n = len(slot.items)
            if not n:
                break
            if skips:  # markers stand for items queued elsewhere (tracked) or for none
                queued += sum(1 for x in slot.items[slot.offset : n] if x is not SKIP)
            else:
                queued += n - slot.offset
        return queued

    # -- cutting (the lease holder) ------------------------------------------------------------
    def cut(self, limit: int) -> list[Any]:
        """Up to ``limit`` items, oldest first: whole slots merged or split to ``limit``.

        A complete slot of exactly ``limit`` items is handed over as the very list the
        producers filled. Slots minted at another batch size are merged (the size grew) or
        split (it shrank), so a backlog admitted earlier is handled at the current size.
        """
        queue = self.queue
        if not queue:
            return []
        head = queue[0]
        items = head.items
        n = len(items)
        if n == limit and n >= head.size and not head.offset:
            queue.popleft()
            return self.skips.drop(items) if self.skips.count else items
        out: list[Any] = []
        while queue and len(out) < limit:
            head = queue[0]
            items = head.items
            n = len(items)
            complete = n >= head.size
            start = head.offset
            end = min(n, start + limit - len(out))
            if end > start:
                out.extend(items[start:end])
            if complete and end >= n:
                queue.popleft()
                continue
            head.offset = end
            if not complete:
                break  # producers are still filling it
        return self.skips.drop(out) if self.skips.count else out

    def take_complete(self, amount: int) -> list[list[Any]]:
        """Whole complete slots, oldest first, up to ``amount`` items (the last one stays)."""
        taken: list[list[Any]] = []
        moved = 0
        queue = self.queue
        while moved < amount and len(queue) > 1 and queue[0].complete():
            slot = queue.popleft()
            items = slot.items[slot.offset :]
            if self.skips.count:
                items = self.skips.drop(items)
            if items:
                taken.append(items)
                moved += len(items)
        return taken

    def drain(self) -> list[Any]:
        """Everything not yet cut (shutdown gave up waiting)."""
        out: list[Any] = []
        queue = self.queue
        while queue:
            try:
                slot = queue.popleft()
            except IndexError:
                break
            out.extend(slot.items[slot.offset :])
        return self.skips.drop(out) if self.skips.count else out
