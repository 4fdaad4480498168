"""Lifecycle faults: forked children, dropped pipelines, exit, concurrent and nested shutdown."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT, Recorder


def _engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sluiceway-")]


def _wait_no_engine_threads(before: set[str], timeout: float = WAIT) -> list[str]:
    """Bounded real-time wait for engine threads (other than ``before``) to exit."""
    end = time.monotonic() + timeout
    while True:
        left = [n for n in _engine_threads() if n not in before]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.01)


def test_concurrent_shutdowns_each_honour_their_own_timeout(
    recorder: Recorder, clock: FakeClock
) -> None:
    """Fault: a second shutdown(timeout=1.0) waited for the first one's unbounded drain."""
    recorder.gate = threading.Event()  # the handler never returns until the test ends
    p = sw.Pipeline(recorder, shards=1, batch_size=1, max_delay=0.0, clock=clock).start()
    assert p.submit_many([1, 2, 3]) == 3
    assert recorder.entered.wait(WAIT)
    reports: dict[str, sw.DrainReport] = {}

    def shutdown(name: str, timeout: float | None) -> None:
        reports[name] = p.shutdown(timeout)

    first = threading.Thread(target=shutdown, args=("first", None))
    first.start()
    end = time.monotonic() + WAIT
    while not p.closed and time.monotonic() < end:
        time.sleep(0.001)
    assert p.closed
    second = threading.Thread(target=shutdown, args=("second", 1.0))
    second.start()
    while second.is_alive() and time.monotonic() < end:
        clock.advance(0.25)  # virtual time: only the second caller has a deadline
        second.join(0.01)
    assert not second.is_alive(), "the second shutdown waited past its own timeout"
    first.join(WAIT)
    assert not first.is_alive()
    assert reports["first"] is reports["second"]
    report = reports["second"]
    assert report.timed_out
    assert report.unfinished == 3  # one in the handler, two queued: all dead-lettered
    assert report.lost == 0
    assert p.dead_lettered_by_reason() == {"shutdown-timeout": 3}
    recorder.gate.set()


@pytest.mark.parametrize("lane", ["regular", "priority"])
def test_shutdown_from_a_handler_is_a_clear_error(lane: str) -> None:
    """Fault: shutdown() called inside a handler deadlocked (it waited for itself)."""
    errors: list[BaseException] = []
    called = threading.Event()
    box: list[sw.Pipeline] = []

    def handler(batch: Any) -> None:
        try:
            box[0].shutdown(timeout=1.0)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertions
            errors.append(e)
        called.set()

    p = sw.Pipeline(handler, shards=1, max_delay=0.0, priority_handler=handler)
    box.append(p)
    p.start()
    try:
        assert p.submit(1, priority=lane == "priority")
        assert called.wait(WAIT)
    finally:
        report = p.shutdown(timeout=WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], sw.SluicewayError)
    assert "outside the handler" in str(errors[0])
    assert report.processed == 1
    assert report.lost == 0
    assert not report.timed_out
