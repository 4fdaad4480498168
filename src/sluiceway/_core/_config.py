"""Validated engine settings. Every check names the argument it rejects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .._clock import MAX_SECONDS
from .._errors import ConfigError, ConfigTypeError
from .._types import BatchHandler, ItemHandler, KeyFunc

__all__ = ["Config", "check_positive_int"]


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(name, f"must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def check_seconds(
    name: str, value: object, *, allow_none: bool = False, setting: bool = False
) -> float | None:
    """``value`` as a non-negative finite number of seconds.

    A ``setting`` (a constructor argument) is also at most ``MAX_SECONDS``; a call's timeout
    is not bounded (the clock clamps it).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(name, f"must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(name, f"must be a finite number >= 0, got {value!r}")
    if setting and value > MAX_SECONDS:
        raise ConfigError(name, f"must be at most {MAX_SECONDS:g} seconds, got {value!r}")
    return float(value)


def _check_callable(name: str, value: object, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not callable(value):
        raise ConfigTypeError(name, f"must be callable, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Config:
    """The settings a Pipeline runs with."""

    handler: BatchHandler
    priority_handler: ItemHandler | None
    key: KeyFunc | None
    shards: int
    batch_size: int
    max_delay: float
    capacity: int
    priority_ratio: float
    workers: int
    partitions: int

    @property
    def priority_capacity(self) -> int:
        """Priority lane size: ``ceil(capacity * priority_ratio)``, never borrowed."""
        return math.ceil(self.capacity * self.priority_ratio)

    @classmethod
    def build(
        cls,
        handler: object,
        *,
        shards: object,
        batch_size: object,
        max_delay: object,
        capacity: object,
        priority_ratio: object,
        priority_handler: object,
        key: object,
        workers: object,
    ) -> Config:
        """Check every argument, then freeze them."""
        checked_handler = _check_callable("handler", handler)
        checked_priority = _check_callable("priority_handler", priority_handler, allow_none=True)
        checked_key = _check_callable("key", key, allow_none=True)
        n_shards = check_positive_int("shards", shards)
        size = check_positive_int("batch_size", batch_size)
        delay = check_seconds("max_delay", max_delay, setting=True)
        cap = check_positive_int("capacity", capacity)
        if cap < n_shards:
            raise ConfigError("capacity", f"must be >= shards ({n_shards}), got {cap}")
        if isinstance(priority_ratio, bool) or not isinstance(priority_ratio, int | float):
            raise ConfigTypeError("priority_ratio", "must be a number in (0, 1)")
        if not 0 < priority_ratio < 1:
            raise ConfigError("priority_ratio", f"must be in (0, 1), got {priority_ratio!r}")
        n_workers = n_shards if workers is None else check_positive_int("workers", workers)
        # Keyed pipelines hash keys into virtual partitions (a power of two, at least 8 a
        # shard) so that rebalancing can move a slice of a shard's keys with their queue.
        partitions = 1 << max(3, math.ceil(math.log2(n_shards * 8)))
        assert delay is not None
        return cls(
            handler=checked_handler,
            priority_handler=checked_priority,
            key=checked_key,
            shards=n_shards,
            batch_size=size,
            max_delay=delay,
            capacity=cap,
            priority_ratio=float(priority_ratio),
            workers=min(n_workers, n_shards),
            partitions=partitions,
        )
