"""Cutting a batch off a shard's queues (by the holder of the shard's lease only).

Only the holder pops from the left of its queues, so a remainder chunk put back with
``appendleft`` stays at the head and per-key order holds. Producers only append on the
right, which is atomic under the GIL; no lock is taken here for untracked items.
"""

from __future__ import annotations

from itertools import repeat
from operator import call
from typing import Any

from ._completion import Completion
from ._shard import Chunk, Part, Shard

__all__ = ["Marks", "cut", "drain_all"]

Marks = list[tuple[Completion, int]]
"""Which tracked submissions own how many items of a batch, in order (run lengths)."""


def cut(shard: Shard, limit: int) -> tuple[list[Any], Marks | None]:
    """Take the next batch: up to ``limit`` items, oldest first, with their completions."""
    slots = shard.slots
    if slots is not None:
        batch = slots.cut(limit)
        if batch:
            return batch, None
    parts = shard.parts
    if len(parts) == 1:
        part = parts[0]
        n = len(part.queue)
        if not part.chunks:  # read after len(): a chunk counted in n is counted here too
            return list(map(call, repeat(part.queue.popleft, min(n, limit)))), None
        return _cut_tracked(parts, limit)
    rotation = _rotation(shard)
    # Lengths first, counts second (as above): a chunk a producer appends in between is
    # either beyond the lengths read or counted; popping by the lengths never takes it.
    lengths = [len(p.queue) for p in rotation]
    if not any(p.chunks for p in rotation):
        return _cut_parts(rotation, lengths, limit), None
    return _cut_tracked(rotation, limit)


def _rotation(shard: Shard) -> list[Part]:
    """The shard's partitions starting after the last one served (fairness among keys)."""
    parts = shard.parts
    start = shard.batches % len(parts)
    return parts[start:] + parts[:start]


def _cut_parts(parts: list[Part], lengths: list[int], limit: int) -> list[Any]:
    items: list[Any] = []
    need = limit
    for part, length in zip(parts, lengths, strict=True):
        if not length:
            continue
        n = min(length, need)
        items.extend(map(call, repeat(part.queue.popleft, n)))
        need -= n
        if not need:
            break
    return items


def _cut_tracked(parts: list[Part], limit: int) -> tuple[list[Any], Marks | None]:
    items: list[Any] = []
    marks: Marks = []
    for part in parts:
        queue = part.queue
        chunks = extra = 0
        while queue and len(items) < limit:
            element = queue.popleft()
            if type(element) is not Chunk:
                items.append(element)
                continue
            room = limit - len(items)
            run = element.items
            if len(run) > room:
                queue.appendleft(Chunk(run[room:], element.completion))
                extra += room
                items.extend(run[:room])
                marks.append((element.completion, room))
                break
            chunks += 1
            extra += len(run) - 1
            items.extend(run)
            marks.append((element.completion, len(run)))
        if chunks or extra:
            part.took(chunks, extra)
        if len(items) >= limit:
            break
    return items, marks or None


def drain_all(shard: Shard) -> tuple[list[Any], Marks | None]:
    """Everything queued on the shard (shutdown gave up waiting)."""
    items = shard.slots.drain() if shard.slots is not None else []
    tracked, marks = _cut_tracked(list(shard.parts), 1 << 62)
    return items + tracked, marks
