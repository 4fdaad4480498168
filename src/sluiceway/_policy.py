"""Failure policies: how often to retry a failed batch, and when a shard stops trying.

``Retry`` and ``Breaker`` are plain frozen settings; the engine keeps the state.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ._clock import MAX_SECONDS
from ._errors import ConfigError, ConfigTypeError, Permanent

__all__ = ["Breaker", "Retry"]


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(name, f"must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(name, f"must be a finite number >= 0, got {value!r}")
    if value > MAX_SECONDS:
        raise ConfigError(name, f"must be at most {MAX_SECONDS:g} seconds, got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(name, f"must be an int, not {type(value).__name__}")
    if value < 1:
        raise ConfigError(name, f"must be >= 1, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a failed batch with exponential backoff, then isolate its poison items.

    A batch gets ``attempts`` handler calls in all. Before call n+1 the shard waits
    ``backoff * 2**(n-1)`` seconds, capped at ``max_backoff`` (with ``jitter``, a uniform
    draw between 0 and that: "full jitter"); other shards and the priority lane keep going.
    Exceptions that are not instances of ``retry_on``, and :class:`sluiceway.Permanent`,
    skip the remaining attempts.

    When a batch of several items has used up its attempts, ``isolate`` splits it in halves
    and tries each (with the same policy), down to single items, so that only the items
    that fail on their own are dead-lettered. The extra calls are bounded: at most
    ``2 * ceil(log2(len(batch))) + 2`` segments a batch, beyond which what still fails is
    dead-lettered.

    ``backoff`` and ``max_backoff`` are at most ``MAX_SECONDS`` (1e6 seconds).
    """

    attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    isolate: bool = True
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _count("attempts", self.attempts)
        _seconds("backoff", self.backoff)
        _seconds("max_backoff", self.max_backoff)
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise ConfigTypeError("retry_on", "must be a tuple of exception types")
        object.__setattr__(self, "_rng", random.Random(self.seed))

    def delay(self, calls_made: int) -> float:
        """Seconds to wait before the next call, after ``calls_made`` failed calls."""
        try:  # ldexp is exact doubling; past the float range the cap applies anyway
            grown = math.ldexp(self.backoff, max(0, calls_made - 1))
        except OverflowError:
            grown = math.inf
        cap = min(self.max_backoff, grown)
        return self._rng.uniform(0.0, cap) if self.jitter else cap

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried at all."""
        return isinstance(error, self.retry_on) and not isinstance(error, Permanent)


@dataclass(frozen=True, slots=True)
class Breaker:
    """A circuit breaker per shard.

    After ``failures`` consecutive failed handler calls on a shard its breaker opens: the
    shard's queued items wait (they are neither lost nor dead-lettered for that), unkeyed
    batches go to shards whose breakers are closed, and when every breaker is open the
    pipeline refuses new items. After ``cooldown`` seconds one probe batch is let through
    (half-open); success closes the breaker, failure opens it for another cooldown.
    ``cooldown`` is at most ``MAX_SECONDS`` (1e6 seconds).
    """

    failures: int = 5
    cooldown: float = 1.0

    def __post_init__(self) -> None:
        _count("failures", self.failures)
        _seconds("cooldown", self.cooldown)
