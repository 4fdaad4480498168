"""``sluiceway bench``: the seed workload (``docs/workload.md``), every engine side by side.

Engines: ``sluiceway``, ``queue`` (a ``queue.Queue`` pipeline), ``asyncio`` (an
``asyncio.Queue`` pipeline) and ``ceiling`` (the same work inline, no queueing). Figures are
meant to be read as ratios between engines of the same run.
"""

from ._config import BenchConfig as BenchConfig
from ._runner import run_bench as run_bench

__all__ = ["BenchConfig", "run_bench"]
