"""Frozen records the engine hands out: dead letters, drain reports, stats snapshots."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["DeadLetter", "DrainReport", "ShardStats", "Stats", "describe_error"]

FLUSH_REASONS = ("size", "time", "manual", "shutdown")


def describe_error(exc: BaseException | None) -> tuple[str | None, str | None, str | None]:
    """Return (type name, message, traceback text) for ``exc``; all None for no exception."""
    if exc is None:
        return None, None, None
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - an exception that cannot print itself is still an outcome
        message = f"<{type(exc).__qualname__}: str() failed>"
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001 - same: never let describing an error lose an item
        text = f"{type(exc).__qualname__}: {message}"
    return type(exc).__qualname__, message, text


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An accepted item the engine gave up on, and why.

    ``reason`` is one of ``"handler-error"`` (no retry policy), ``"retries-exhausted"``,
    ``"permanent"`` (``sw.Permanent`` or an exception outside ``Retry.retry_on``),
    ``"shutdown-timeout"``. ``shard`` is None for the priority lane.
    ``timestamp`` is wall-clock seconds (``time.time()``).
    """

    item: Any
    reason: str
    error_type: str | None
    error_message: str | None
    traceback: str | None
    attempts: int
    shard: int | None
    timestamp: float


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What ``shutdown`` did: every accepted item is processed, dead-lettered or unfinished.

    ``unfinished`` counts the items still queued or in a handler when the timeout expired;
    they were dead-lettered with reason ``"shutdown-timeout"`` and are included in
    ``dead_lettered`` too, so ``accepted == processed + dead_lettered`` always holds.
    ``stuck_threads`` counts worker threads still inside a handler call that never returned
    (Python cannot stop them; they are daemon threads and their late results are ignored).
    """

    accepted: int
    processed: int
    dead_lettered: int
    unfinished: int
    timed_out: bool
    stuck_threads: int = 0
    undelivered: int = 0  # dead letters the sink refused; see Pipeline.undelivered_dead_letters

    @property
    def lost(self) -> int:
        """Accepted items with no outcome. Always 0: a non-zero value is a bug."""
        return self.accepted - self.processed - self.dead_lettered


@dataclass(frozen=True, slots=True)
class ShardStats:
    """One shard at the moment of the snapshot."""

    index: int
    depth: int
    capacity: int
    processed: int
    dead_lettered: int
    batches: int
    in_handler: bool
    breaker: str = "closed"  # "closed", "open" or "half-open"
    batch_size: int = 0  # this shard's current batch size
    steals_out: int = 0  # times this shard gave work away
    moved_out: int = 0  # items it gave away
    steals_in: int = 0  # times it was given work
    moved_in: int = 0  # items it was given


@dataclass(frozen=True, slots=True)
class Stats:
    """A consistent-enough snapshot of a pipeline; every count is since construction.

    ``accepted`` counts regular and priority items; ``in_flight`` is the items of both lanes
    without an outcome yet (queued, batched, or in a handler), read from the capacity
    tokens out, so it never exceeds ``capacity + priority_capacity``;
    ``priority_in_flight`` is the priority lane's part of it (at most
    ``priority_capacity``), so ``in_flight - priority_in_flight`` never exceeds
    ``capacity``. Latencies are in seconds, measured on the pipeline's clock, over the
    most recent priority items.
    """

    accepted: int
    refused: int
    processed: int
    dead_lettered: int
    in_flight: int
    priority_accepted: int
    priority_refused: int
    priority_depth: int
    priority_capacity: int
    capacity: int
    batch_size: int
    batch_time_ema: float
    flushes: Mapping[str, int]
    priority_latency_p50: float | None
    priority_latency_p99: float | None
    shards: tuple[ShardStats, ...] = field(default=())
    closed: bool = False
    retries: int = 0  # handler calls that retried a failed batch
    batch_size_changes: int = 0  # how often adaptive sizing moved the batch size
    dead_letters_undelivered: int = 0  # records the dead-letter sink refused, held in memory
    priority_in_flight: int = 0  # priority items without an outcome yet

    @staticmethod
    def flush_map(counts: list[int]) -> Mapping[str, int]:
        """A read-only mapping of flush reason to count."""
        return MappingProxyType(dict(zip(FLUSH_REASONS, counts, strict=True)))
