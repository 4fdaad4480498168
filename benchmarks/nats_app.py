"""The pipeline ``benchmarks/nats_throughput.py`` runs in each worker: the cpu handler."""

from __future__ import annotations

from typing import Any

import sluiceway as sw


def factory() -> sw.Pipeline:
    """Touch every event, as the seed's cpu handler does."""

    def handler(batch: list[dict[str, Any]]) -> None:
        total = 0
        for event in batch:
            total += len(event["payload"])

    return sw.Pipeline(handler, batch_size=256, gc_threshold=10_000)
