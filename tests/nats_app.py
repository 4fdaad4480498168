"""A pipeline factory for ``sluiceway worker`` tests: records processed ids per process.

Ids go to ``$SLUICEWAY_TEST_OUT-<pid>``, one a line, appended per batch; events with
``"poison": true`` fail every call (and are dead-lettered after isolation).
"""

from __future__ import annotations

import os
import time
from typing import Any

import sluiceway as sw


def factory() -> sw.Pipeline:
    """One pipeline per worker process."""
    out = f"{os.environ['SLUICEWAY_TEST_OUT']}-{os.getpid()}"
    delay = float(os.environ.get("SLUICEWAY_TEST_DELAY", "0"))

    def handler(batch: list[dict[str, Any]]) -> None:
        if any(e.get("poison") for e in batch):
            raise ValueError("poison event")
        if delay:
            time.sleep(delay)
        with open(out, "a", encoding="utf-8") as f:
            f.write("".join(f"{e['n']}\n" for e in batch))

    return sw.Pipeline(handler, shards=4, batch_size=256, retry=sw.Retry(attempts=1, backoff=0.0))
