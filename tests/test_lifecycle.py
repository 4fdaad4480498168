"""Lifecycle faults: forked children, dropped pipelines, exit, concurrent and nested shutdown."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
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


# The child only calls os._exit and pipeline methods that take no lock a parent thread
# could hold; Python 3.12+ warns about any fork() of a multi-threaded process.
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_gets_closed_not_a_silent_pipeline(recorder: Recorder) -> None:
    """Fault: after os.fork() the child's copy admitted items that nothing would process."""
    p = sw.Pipeline(recorder, shards=2, batch_size=4, max_delay=0.001).start()
    try:
        assert p.submit(0)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 0
            try:
                for bit, call in enumerate(
                    [
                        lambda: p.submit(1),
                        lambda: p.submit_many([1, 2]),
                        lambda: p.submit_tracked([1]),
                        lambda: p.put(1, timeout=0.1),
                        lambda: p.wait_idle(0.1),
                        p.start,
                    ]
                ):
                    try:
                        call()
                        code |= 1 << bit
                    except sw.Closed as e:
                        if f"pid {parent}" not in str(e) or "in the child" not in str(e):
                            code |= 1 << bit
                report = p.shutdown(timeout=1.0)
                if report.accepted != 0 or report.lost != 0 or not p.closed:
                    code |= 64
            except BaseException:  # noqa: BLE001 - anything unexpected fails the test
                code = 127
            os._exit(code)
        end = time.monotonic() + WAIT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > end:
                break
            time.sleep(0.01)
        if not done:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        assert os.waitstatus_to_exitcode(status) == 0
        assert p.submit(5)  # the parent's pipeline is untouched
    finally:
        report = p.shutdown(timeout=WAIT)
    assert sorted(recorder.items) == [0, 5]
    assert report.lost == 0


def _start_and_drop(recorder: Recorder, count: int) -> None:
    for i in range(count):
        p = sw.Pipeline(recorder, shards=2, batch_size=64, max_delay=60.0).start()
        for j in range(10):
            assert p.submit((i, j))
        del p
        gc.collect()


def test_dropped_pipelines_warn_and_are_shut_down_in_the_background() -> None:
    """Fault: started pipelines dropped without shutdown() kept their threads for ever."""
    before = set(_engine_threads())
    recorder = Recorder()
    with pytest.warns(ResourceWarning, match="without shutdown") as warned:
        _start_and_drop(recorder, 20)
    assert sum(w.category is ResourceWarning for w in warned) == 20
    assert recorder.wait_items(200)  # partial batches drained, not waiting for max_delay
    assert sorted(recorder.items) == sorted((i, j) for i in range(20) for j in range(10))
    assert _wait_no_engine_threads(before) == []


def test_items_of_a_pipeline_running_at_exit_are_drained(tmp_path: Path) -> None:
    """Fault: a pipeline never shut down lost its queued items at interpreter exit."""
    out = tmp_path / "handled.txt"
    script = textwrap.dedent(
        f"""
        import sluiceway as sw

        def handler(batch):
            with open({str(out)!r}, "a") as f:
                f.writelines(f"{{x}}\\n" for x in batch)

        p = sw.Pipeline(handler, shards=2, batch_size=64, max_delay=60.0).start()
        for i in range(50):
            assert p.submit(i)
        # no shutdown(): the interpreter exits with 50 items queued in partial batches
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert sorted(int(x) for x in out.read_text().split()) == list(range(50))
    assert "interpreter exit" in done.stderr
    assert "50 items drained" in done.stderr


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

    # Whichever caller closes the pipeline, the one without a timeout must not hold up
    # the one with a timeout of 1.0 (virtual) seconds.
    first = threading.Thread(target=shutdown, args=("first", None))
    first.start()
    second = threading.Thread(target=shutdown, args=("second", 1.0))
    second.start()
    end = time.monotonic() + WAIT
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


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_engine_threads_hold_no_reference_to_the_pipeline(kind: str) -> None:
    """What the finalizer relies on: a running pipeline's threads do not keep it alive."""
    handled: list[Any] = []

    async def ahandler(batch: list[Any]) -> None:
        handled.extend(batch)

    handler: Any = handled.extend if kind == "sync" else ahandler
    before = set(_engine_threads())
    ref = _start_submit_and_forget(handler)
    assert ref() is None  # freed by its reference count alone
    assert _wait_no_engine_threads(before) == []
    assert sorted(handled) == [0, 1, 2]


def _start_submit_and_forget(handler: Any) -> weakref.ref[sw.Pipeline]:
    p = sw.Pipeline(handler, shards=1, batch_size=64, max_delay=60.0).start()
    admitted = p.submit_many([0, 1, 2])
    ref = weakref.ref(p)
    assert admitted == 3
    gc.disable()  # the warning must come from the reference count, not from gc
    try:
        with pytest.warns(ResourceWarning):
            del p
    finally:
        gc.enable()
    return ref
