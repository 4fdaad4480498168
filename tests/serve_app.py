"""A pipeline factory for ``sluiceway serve`` tests: records processed ids in a file.

The file is ``$SLUICEWAY_TEST_OUT`` with ``-<pid>`` appended, one id a line, written per
batch; each handler call sleeps ``$SLUICEWAY_TEST_DELAY`` seconds to keep work in flight.
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
        time.sleep(delay)
        with open(out, "a", encoding="utf-8") as f:
            f.write("".join(f"{e['id']}\n" for e in batch))

    return sw.Pipeline(handler, shards=2, batch_size=32, max_delay=0.002)
