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
from ._errors import Permanent as Permanent
from ._errors import SluicewayError as SluicewayError
from ._policy import Breaker as Breaker
from ._policy import Retry as Retry
from ._records import DeadLetter as DeadLetter
from ._records import DrainReport as DrainReport
from ._records import ShardStats as ShardStats
from ._records import Stats as Stats

__version__ = "0.1.0.dev0"

__all__ = [
    "BatchError",
    "Breaker",
    "CircuitOpen",
    "Clock",
    "Closed",
    "Completion",
    "ConfigError",
    "ConfigTypeError",
    "DeadLetter",
    "DrainReport",
    "Full",
    "JsonlDeadLetters",
    "MemoryDeadLetters",
    "Permanent",
    "Pipeline",
    "Retry",
    "ShardStats",
    "SluicewayError",
    "Stats",
    "SystemClock",
    "current_shard",
]
