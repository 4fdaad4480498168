"""The pipeline ``benchmarks/durable_ingest.py`` runs, in ``serve`` or in ``worker``.

The cpu handler, plus, per batch, one line in ``$DURABLE_OUT-<pid>``: the time, the batch's
size and the POST-to-handler latency (seconds) of every 50th event (``n % 50 == 0``; the
load generator stamps each body with ``t``, wall-clock seconds, just before posting it).
"""

from __future__ import annotations

import os
import time
from typing import Any

import sluiceway as sw


def factory() -> sw.Pipeline:
    """Touch every event; record counts and sampled latencies."""
    out = f"{os.environ['DURABLE_OUT']}-{os.getpid()}"

    def handler(batch: list[dict[str, Any]]) -> None:
        now = time.time()
        total = 0
        lat = []
        for event in batch:
            total += len(event["payload"])
            if event["n"] % 50 == 0:
                lat.append(f"{now - event['t']:.6f}")
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"{now:.6f} {len(batch)} {' '.join(lat)}\n")

    return sw.Pipeline(handler, batch_size=256, gc_threshold=10_000)
