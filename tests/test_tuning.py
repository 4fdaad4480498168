"""Process-wide tuning (``switch_interval``, ``gc_threshold``) shared by overlapping pipelines."""

from __future__ import annotations

import gc
import itertools
import sys

import pytest

import sluiceway as sw

SETTINGS = [(0.001, 5_000), (0.0005, 20_000), (0.002, 10_000)]


def _expected(held: list[int], saved: tuple[float, tuple[int, ...]]) -> tuple[float, int]:
    if not held:
        return saved[0], saved[1][0]
    return min(SETTINGS[i][0] for i in held), max(SETTINGS[i][1] for i in held)


@pytest.mark.parametrize(
    "order",
    [*itertools.permutations(range(2)), *itertools.permutations(range(3))],
    ids=str,
)
def test_overlapping_pipelines_restore_the_interpreter_in_any_release_order(
    order: tuple[int, ...],
) -> None:
    """Fault: overlapping pipelines restored FIFO and left the process tuned after both."""
    saved = (sys.getswitchinterval(), gc.get_threshold())
    pipelines = []
    for interval, threshold in SETTINGS[: len(order)]:
        pipelines.append(
            sw.Pipeline(print, shards=1, switch_interval=interval, gc_threshold=threshold).start()
        )
    try:
        held = list(range(len(order)))
        want = _expected(held, saved)
        assert (sys.getswitchinterval(), gc.get_threshold()[0]) == pytest.approx(want)
        for i in order:
            pipelines[i].shutdown()
            held.remove(i)
            want = _expected(held, saved)
            assert (sys.getswitchinterval(), gc.get_threshold()[0]) == pytest.approx(want)
        assert gc.get_threshold() == saved[1]
        assert sys.getswitchinterval() == saved[0]
    finally:
        for p in pipelines:
            p.shutdown()
        sys.setswitchinterval(saved[0])
        gc.set_threshold(*saved[1])


def test_a_pipeline_without_tuning_leaves_the_others_alone() -> None:
    """Only pipelines that ask for a setting hold it; the others neither set nor restore."""
    saved = (sys.getswitchinterval(), gc.get_threshold())
    tuned = sw.Pipeline(print, shards=1, switch_interval=0.0005).start()
    plain = sw.Pipeline(print, shards=1).start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert gc.get_threshold() == saved[1]
        plain.shutdown()
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        tuned.shutdown()
        assert sys.getswitchinterval() == saved[0]
    finally:
        tuned.shutdown()
        plain.shutdown()
        sys.setswitchinterval(saved[0])
        gc.set_threshold(*saved[1])
