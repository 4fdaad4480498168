"""Shutdown drains every accepted item, twice is safe, a timeout dead-letters the rest."""

from __future__ import annotations

import threading

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT, Recorder


def test_shutdown_drains_partial_batches_and_priority(recorder: Recorder) -> None:
    """Everything accepted before shutdown is processed, partial batches included."""
    p = sw.Pipeline(recorder, batch_size=64, max_delay=60.0, priority_handler=recorder.on_priority)
    p.start()
    for i in range(100):
        p.submit(i)
    p.submit("p", priority=True)
    report = p.shutdown()
    assert sorted(recorder.items) == list(range(100))
    assert recorder.priority == ["p"]
    assert (report.accepted, report.processed, report.dead_lettered, report.lost) == (
        101,
        101,
        0,
        0,
    )
    assert not report.timed_out
    assert p.stats().flushes["shutdown"] >= 1


def test_shutdown_of_a_pipeline_never_started_still_drains(recorder: Recorder) -> None:
    """Items queued before start() are handled by shutdown()."""
    p = sw.Pipeline(recorder, batch_size=64)
    p.submit_many(range(10))
    report = p.shutdown()
    assert report.processed == 10
    assert sorted(recorder.items) == list(range(10))


def test_shutdown_twice_returns_the_same_report(recorder: Recorder) -> None:
    """A second shutdown is harmless and returns the first report."""
    p = sw.Pipeline(recorder).start()
    p.submit(1)
    first = p.shutdown()
    assert p.shutdown() is first
    assert p.closed


def test_no_threads_left_running(recorder: Recorder) -> None:
    """After shutdown no sluiceway thread is alive."""
    with sw.Pipeline(recorder, shards=4) as p:
        p.submit_many(range(50))
    alive = [t.name for t in threading.enumerate() if t.name.startswith("sluiceway")]
    assert alive == []
    assert p.shutdown().stuck_threads == 0


def test_restart_after_shutdown_is_refused(recorder: Recorder) -> None:
    """A shut pipeline cannot be started again."""
    p = sw.Pipeline(recorder).start()
    p.shutdown()
    try:
        p.start()
    except sw.Closed:
        pass
    else:
        raise AssertionError("start() after shutdown() must raise Closed")


def test_failing_handler_dead_letters_and_keeps_running(recorder: Recorder) -> None:
    """A batch whose handler raises is dead-lettered with its error; later ones still run."""
    recorder.fail = RuntimeError("downstream says no")
    p = sw.Pipeline(recorder, shards=1, batch_size=2, max_delay=0).start()
    p.submit_many(["a", "b"])
    assert p.wait_idle(WAIT)
    recorder.fail = None
    p.submit_many(["c", "d"])
    report = p.shutdown()
    assert recorder.items == ["c", "d"]
    assert (report.processed, report.dead_lettered, report.lost) == (2, 2, 0)
    letters = p.dead_letters.records()
    assert [d.item for d in letters] == ["a", "b"]
    assert {d.reason for d in letters} == {"handler-error"}
    assert letters[0].error_type == "RuntimeError"
    assert letters[0].error_message == "downstream says no"
    assert letters[0].traceback is not None
    assert "downstream says no" in letters[0].traceback
    assert letters[0].shard == 0
    assert letters[0].attempts == 1


def test_timeout_dead_letters_what_is_stuck(recorder: Recorder, clock: FakeClock) -> None:
    """A handler that never returns: shutdown(timeout) dead-letters its batch and the queue."""
    recorder.gate = threading.Event()  # the handler blocks until the test ends
    p = sw.Pipeline(recorder, shards=1, batch_size=2, max_delay=0, clock=clock).start()
    p.submit_many(["stuck-1", "stuck-2"])
    assert recorder.entered.wait(WAIT)
    p.submit_many(["queued-1", "queued-2", "queued-3"])
    reports: list[sw.DrainReport] = []
    t = threading.Thread(target=lambda: reports.append(p.shutdown(timeout=5.0)))
    t.start()
    assert clock.wait_for_sleepers(1)  # shutdown waits on the fake clock
    clock.advance(5.0)
    t.join(WAIT)
    (report,) = reports
    assert report.timed_out
    assert (report.accepted, report.processed, report.dead_lettered) == (5, 0, 5)
    assert report.unfinished == 5
    assert report.lost == 0
    letters = p.dead_letters.records()
    assert sorted(d.item for d in letters) == sorted(
        ["stuck-1", "stuck-2", "queued-1", "queued-2", "queued-3"]
    )
    assert {d.reason for d in letters} == {"shutdown-timeout"}
    # The stuck handler returns late: its batch is not counted a second time.
    assert report.stuck_threads >= 1  # the worker inside the handler could not be joined
    recorder.gate.set()
    assert recorder.wait_items(2)  # the handler did finish its batch, late
    for t in threading.enumerate():
        if t.name.startswith("sluiceway-"):
            t.join(WAIT)
    stats = p.stats()
    assert (stats.processed, stats.dead_lettered) == (0, 5)


def test_context_manager_drains_on_exit(recorder: Recorder) -> None:
    """Leaving the ``with`` block shuts down and drains."""
    with sw.Pipeline(recorder, max_delay=60.0) as p:
        p.submit_many(range(7))
    assert sorted(recorder.items) == list(range(7))
    assert p.closed
