"""``submit`` and ``submit_many``: admit or refuse at once, never block.

The hot path is built as closures over local names: one token pop (capacity and, unkeyed,
the destination queue), one append, one truthiness test of the sleeping-workers deque.
No lock, no per-item counter, no allocation beyond what the caller passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import count, repeat
from operator import call
from typing import Any

from .._errors import InvalidItem
from ._claim import Scheduler
from ._completion import Completion
from ._priority import PriorityLane
from ._shard import Chunk
from ._slots import SKIP
from ._state import State

__all__ = ["Submit", "SubmitMany", "make_submit", "make_submit_many", "submit_tracked"]

_spread = count()  # round-robin start for tracked chunks (next() is atomic)

Submit = Callable[..., bool]
SubmitMany = Callable[..., int]


def _refuse(st: State, count: int = 1) -> bool:
    st.refuse(count)
    return False


def make_submit(st: State, sched: Scheduler, lane: PriorityLane) -> Submit:
    """Build the per-item ``submit`` for this pipeline's shape (keyed or not)."""
    parked = sched.parked
    arrived = sched.arrived
    submit_priority = lane.submit
    if st.pool is not None:
        take = st.pool.take

        def submit(item: Any, priority: bool = False) -> bool:
            if priority:
                return submit_priority(item)
            try:
                append: Callable[[Any], None] = take()  # type: ignore[assignment]
            except IndexError:
                return _refuse(st)
            append(item)
            if parked:
                arrived()
            return True

        return submit

    key = st.cfg.key
    assert key is not None
    mask = st.cfg.partitions - 1
    appends = [part.queue.append for part in st.parts]
    takes = st.takes

    def submit_keyed(item: Any, priority: bool = False) -> bool:
        if priority:
            return submit_priority(item)
        try:
            p = hash(key(item)) & mask
        except Exception as exc:
            raise InvalidItem(0, item, exc) from exc
        try:
            token = takes[p]()
        except IndexError:
            return _refuse(st)
        appends[p](item)
        if token is not None:
            token.check()
        if parked:
            arrived()
        return True

    return submit_keyed


def make_submit_many(st: State, sched: Scheduler, lane: PriorityLane) -> SubmitMany:
    """Build ``submit_many``: the longest prefix that fits is admitted."""
    parked = sched.parked
    arrived = sched.arrived
    pool = st.pool

    def submit_many(
        items: Iterable[Any],
        priority: bool = False,
        *,
        on_done: Callable[[Completion], object] | None = None,
    ) -> int:
        batch = items if isinstance(items, list) else list(items)
        if on_done is not None:
            completion = submit_tracked(st, sched, batch, priority)
            completion.add_done_callback(on_done)
            return completion.accepted
        if priority:
            return _many_priority(st, batch, None)
        if pool is None:
            return _many_routed(st, sched, batch, None)
        taken: list[Any] = []
        try:  # list.extend keeps what it got before the pool ran dry
            taken.extend(map(call, repeat(pool.take, len(batch))))
        except IndexError:
            pass
        k = len(taken)
        if k:
            deque(map(call, taken, batch), maxlen=0)
            if parked:
                arrived()
        if k < len(batch):
            _refuse(st, len(batch) - k)
        return k

    return submit_many


def submit_tracked(
    st: State,
    sched: Scheduler,
    batch: list[Any],
    priority: bool,
    guard: Callable[[], None] | None = None,
) -> Completion:
    """Admit the longest prefix of ``batch`` and return a handle on its outcome.

    ``guard`` is called first by the handle's ``wait()`` (it refuses on the handlers' loop).
    """
    completion = Completion(guard=guard)
    if priority:
        _many_priority(st, batch, completion)
    else:
        _many_routed(st, sched, batch, completion)
    return completion


def _many_priority(st: State, batch: list[Any], completion: Completion | None) -> int:
    take = st.ptokens.take
    k = 0
    for _ in batch:
        try:
            take()
        except IndexError:
            break
        k += 1
    if completion is not None:
        completion._arm(k)
    now = st.now()
    st.pq.extend((item, now, completion) for item in batch[:k])
    if k < len(batch):
        st.refuse(len(batch) - k, priority=True)
    if k:
        st.priority_queued()
    return k


def _many_routed(
    st: State, sched: Scheduler, batch: list[Any], completion: Completion | None
) -> int:
    """Keyed or tracked submissions: route item by item, queue runs per destination."""
    if st.pool is not None:
        k = _many_tracked_unkeyed(st, batch, completion)
    else:
        k = _many_keyed(st, batch, completion)
    if sched.parked:
        sched.arrived()
    if k < len(batch):
        _refuse(st, len(batch) - k)
    return k


def _many_tracked_unkeyed(st: State, batch: list[Any], completion: Completion | None) -> int:
    """Capacity from the slot tokens (each marked SKIP); items queued as chunks per shard."""
    assert st.pool is not None
    assert completion is not None
    taken: list[Any] = []
    try:
        taken.extend(map(call, repeat(st.pool.take, len(batch))))
    except IndexError:
        pass
    k = len(taken)
    completion._arm(k)
    if k:
        st.skips.add(k)  # counted before any SKIP lands, so the cutter filters them
        deque(map(call, taken, repeat(SKIP)), maxlen=0)
        size = st.cfg.batch_size
        shards = st.shards
        spread = next(_spread)
        for i, start in enumerate(range(0, k, size)):
            shard = shards[(spread + i) % len(shards)]
            shard.parts[0].add_chunk(Chunk(batch[start : min(start + size, k)], completion))
    return k


def partitions_of(key: Callable[[Any], Any], mask: int, batch: list[Any]) -> list[int]:
    """Each item's partition; ``InvalidItem`` (nothing admitted) if a key cannot be had."""
    try:
        return [hash(key(item)) & mask for item in batch]
    except Exception:
        for index, item in enumerate(batch):  # find the culprit: the slow path, once
            try:
                hash(key(item))
            except Exception as exc:
                raise InvalidItem(index, item, exc) from exc
        raise


def _many_keyed(st: State, batch: list[Any], completion: Completion | None) -> int:
    key = st.cfg.key
    assert key is not None
    mask = st.cfg.partitions - 1
    partitions = partitions_of(key, mask, batch)  # before any capacity is taken
    runs: dict[int, list[Any]] = {}
    signals: list[Any] = []
    takes = st.takes
    k = 0
    for item, p in zip(batch, partitions, strict=True):
        try:
            token = takes[p]()
        except IndexError:
            break
        if token is not None:
            signals.append(token)
        run = runs.get(p)
        if run is None:
            runs[p] = [item]
        else:
            run.append(item)
        k += 1
    if completion is not None:
        completion._arm(k)
    parts = st.parts
    for p, run_items in runs.items():
        if completion is None:
            parts[p].queue.extend(run_items)
        else:
            parts[p].add_chunk(Chunk(run_items, completion))
    for token in signals:
        token.check()
    return k
