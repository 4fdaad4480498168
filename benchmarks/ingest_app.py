"""The pipeline ``benchmarks/ingest.py`` serves: the cpu handler, optionally slowed."""

from __future__ import annotations

import os
import time
from typing import Any

import sluiceway as sw


def factory() -> sw.Pipeline:
    """A pipeline whose handler touches every event (and sleeps if INGEST_DELAY is set)."""
    delay = float(os.environ.get("INGEST_DELAY", "0"))

    def handler(batch: list[dict[str, Any]]) -> None:
        if delay:
            time.sleep(delay)
        total = 0
        for event in batch:
            total += len(event["payload"])

    return sw.Pipeline(handler, gc_threshold=10_000)
