"""Cutting a batch off a shard's queues.

Only the worker holding the shard pops from the left of its queues, so a remainder chunk put
back with ``appendleft`` stays at the head and per-key order holds. Producers only append
on the right, which is atomic under the GIL; no lock is taken here for untracked items.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from operator import call
from typing import Any

from ._completion import Completion
from ._shard import Chunk, Shard
from ._slots import SKIP
from ._state import State

__all__ = ["Marks", "cut"]

Marks = list[tuple[Completion, int]]
"""Which tracked submissions own how many items of a batch."""


def cut(st: State, shard: Shard, limit: int) -> tuple[list[Any], Marks | None]:
    """Take the next batch: up to ``limit`` items, oldest first, with their completions."""
    slots = shard.slots
    while slots:
        head = slots[0]
        items = head.items
        n = len(items)
        if n >= head.size:  # complete: hand over the very list the producers filled
            slots.popleft()
            batch = items if not head.offset else items[head.offset :]
        elif n > head.offset:  # a partial flush: what is there now
            batch = items[head.offset : n]
            head.offset = n
        else:
            break
        if st.skips:
            batch = _unskip(st, batch)
        if batch:
            return batch, None
    parts = shard.parts
    if len(parts) == 1:
        part = parts[0]
        n = len(part)
        if not shard.chunks:  # read after len(): a chunk counted in n is counted here too
            n = min(n, limit)
            return list(map(call, repeat(part.popleft, n))), None
        return _cut_tracked(shard, (part,), limit)
    if not shard.chunks:
        return _cut_parts(shard, limit), None
    return _cut_tracked(shard, _rotation(shard), limit)


def _unskip(st: State, batch: list[Any]) -> list[Any]:
    kept = [x for x in batch if x is not SKIP]
    if len(kept) != len(batch):
        with st.count_lock:
            st.skips -= len(batch) - len(kept)
    return kept


def _rotation(shard: Shard) -> list[deque[Any]]:
    """The shard's partitions starting at its cursor, which then moves on by one."""
    parts = shard.parts
    start = shard.cursor % len(parts)
    shard.cursor = start + 1
    return parts[start:] + parts[:start]


def _cut_parts(shard: Shard, limit: int) -> list[Any]:
    items: list[Any] = []
    need = limit
    for part in _rotation(shard):
        n = len(part)
        if not n:
            continue
        n = min(n, need)
        items.extend(map(call, repeat(part.popleft, n)))
        need -= n
        if not need:
            break
    return items


def _cut_tracked(
    shard: Shard, parts: tuple[deque[Any], ...] | list[deque[Any]], limit: int
) -> tuple[list[Any], Marks | None]:
    items: list[Any] = []
    marks: Marks = []
    for part in parts:
        while part and len(items) < limit:
            element = part.popleft()
            if type(element) is not Chunk:
                items.append(element)
                continue
            room = limit - len(items)
            run = element.items
            if len(run) > room:
                part.appendleft(Chunk(run[room:], element.completion))
                with shard.lock:
                    shard.chunk_extra -= room
                items.extend(run[:room])
                marks.append((element.completion, room))
                break
            with shard.lock:
                shard.chunks -= 1
                shard.chunk_extra -= len(run) - 1
            items.extend(run)
            marks.append((element.completion, len(run)))
        if len(items) >= limit:
            break
    return items, marks or None


def drain_all(st: State, shard: Shard) -> tuple[list[Any], Marks | None]:
    """Everything queued on the shard (used when shutdown gives up waiting)."""
    items: list[Any] = []
    while shard.slots:
        slot = shard.slots.popleft()
        items.extend(x for x in slot.items[slot.offset :] if x is not SKIP)
    tracked, marks = _cut_tracked(shard, shard.parts, 1 << 62)
    return items + tracked, marks
