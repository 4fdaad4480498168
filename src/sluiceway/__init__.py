"""sluiceway: high-throughput event pipelines for Python.

Admit or refuse each event at once, sort events into shards, cut them into batches by size
or by time, send urgent events down a priority lane, and drain every accepted event at
shutdown::

    import sluiceway as sw

    with sw.Pipeline(write, shards=8, batch_size=64, max_delay=0.005) as p:
        if not p.submit(event):
            ...  # backpressure: try later
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._core._completion import Completion as Completion
from ._core._handle import current_shard as current_shard
from ._core._pipeline import Pipeline as Pipeline
from ._deadletters import JsonlDeadLetters as JsonlDeadLetters
from ._deadletters import MemoryDeadLetters as MemoryDeadLetters
from ._errors import BatchError as BatchError
from ._errors import CircuitOpen as CircuitOpen
from ._errors import Closed as Closed
from ._errors import ConfigError as ConfigError
from ._errors import ConfigTypeError as ConfigTypeError
from ._errors import Full as Full
from ._errors import InvalidItem as InvalidItem
from ._errors import Permanent as Permanent
from ._errors import Rejected as Rejected
from ._errors import SluicewayError as SluicewayError
from ._policy import Breaker as Breaker
from ._policy import Retry as Retry
from ._records import DeadLetter as DeadLetter
from ._records import DrainReport as DrainReport
from ._records import ShardStats as ShardStats
from ._records import Stats as Stats

if TYPE_CHECKING:  # the clients load lazily (see __getattr__); declared for type checkers
    from .client import AsyncClient as AsyncClient
    from .client import Client as Client
    from .client import SendResult as SendResult

__version__ = "0.1.0.dev0"

_LAZY = {"AsyncClient": "client", "Client": "client", "SendResult": "client"}


def __getattr__(name: str) -> object:
    """Integrations load on first use, so ``import sluiceway`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sluiceway' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sluiceway.{module}"), name)


__all__ = [
    "AsyncClient",
    "BatchError",
    "Breaker",
    "CircuitOpen",
    "Client",
    "Clock",
    "Closed",
    "Completion",
    "ConfigError",
    "ConfigTypeError",
    "DeadLetter",
    "DrainReport",
    "Full",
    "InvalidItem",
    "JsonlDeadLetters",
    "MemoryDeadLetters",
    "Permanent",
    "Pipeline",
    "Rejected",
    "Retry",
    "SendResult",
    "ShardStats",
    "SluicewayError",
    "Stats",
    "SystemClock",
    "current_shard",
]
