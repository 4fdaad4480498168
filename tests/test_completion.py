"""Completion hooks: learn when every accepted item of one submission has an outcome."""

from __future__ import annotations

import threading

import pytest

import sluiceway as sw

from .conftest import WAIT, Recorder


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_on_done_fires_once_all_items_are_processed(recorder: Recorder, keyed: bool) -> None:
    """on_done is called once, after the handler saw every accepted item of the call."""
    key = (lambda x: x % 5) if keyed else None
    calls: list[sw.Completion] = []
    fired = threading.Event()

    def on_done(c: sw.Completion) -> None:
        calls.append(c)
        fired.set()

    with sw.Pipeline(recorder, shards=3, batch_size=7, max_delay=0, key=key) as p:
        assert p.submit_many(range(50), on_done=on_done) == 50
        assert fired.wait(WAIT)
        assert len(recorder.items) >= 50
    (done,) = calls
    assert (done.accepted, done.processed, done.dead_lettered) == (50, 50, 0)
    assert done.done()


def test_tracked_items_mix_with_untracked_ones(recorder: Recorder) -> None:
    """Tracked and plain submissions interleave; every item is handled once."""
    with sw.Pipeline(recorder, shards=2, batch_size=8, max_delay=0) as p:
        p.submit_many(range(10))
        c = p.submit_tracked(list(range(10, 30)))
        for i in range(30, 40):
            p.submit(i)
        assert c.wait(WAIT)
    assert sorted(recorder.items) == list(range(40))
    assert c.processed == 20


def test_completion_counts_dead_letters(recorder: Recorder) -> None:
    """A failing handler settles the completion with dead-lettered counts."""
    recorder.fail = ValueError("bad")
    with sw.Pipeline(recorder, shards=1, batch_size=4, max_delay=0) as p:
        c = p.submit_tracked(list(range(6)))
        assert c.wait(WAIT)
    assert (c.processed, c.dead_lettered) == (0, 6)


def test_completion_of_a_refused_submission_is_done_at_once(recorder: Recorder) -> None:
    """When nothing is admitted, the completion is done immediately with accepted=0."""
    p = sw.Pipeline(recorder, capacity=2, shards=1)
    p.submit_many([1, 2])
    seen: list[sw.Completion] = []
    assert p.submit_many([3, 4], on_done=seen.append) == 0
    assert len(seen) == 1
    assert seen[0].accepted == 0
    assert seen[0].done()
    p.shutdown()


def test_partial_admission_tracks_only_the_prefix(recorder: Recorder) -> None:
    """With room for 3 of 5 items, the completion covers exactly those 3."""
    p = sw.Pipeline(recorder, capacity=3, shards=1, batch_size=2)
    c = p.submit_tracked([1, 2, 3, 4, 5])
    assert c.accepted == 3
    p.shutdown()
    assert c.done()
    assert c.processed == 3
    assert sorted(recorder.items) == [1, 2, 3]


def test_priority_completion(recorder: Recorder) -> None:
    """Priority submissions can be tracked too."""
    with sw.Pipeline(recorder, priority_handler=recorder.on_priority) as p:
        c = p.submit_tracked(["x", "y"], priority=True)
        assert c.wait(WAIT)
    assert c.processed == 2
    assert sorted(recorder.priority) == ["x", "y"]


def test_shutdown_timeout_settles_completions(recorder: Recorder) -> None:
    """Items dead-lettered by a shutdown timeout still complete their handle."""
    recorder.gate = threading.Event()
    p = sw.Pipeline(recorder, shards=1, batch_size=2, max_delay=0).start()
    c = p.submit_tracked([1, 2, 3])
    assert recorder.entered.wait(WAIT)
    report = p.shutdown(timeout=0.05)
    assert report.timed_out
    assert c.done()
    assert (c.processed, c.dead_lettered) == (0, 3)
