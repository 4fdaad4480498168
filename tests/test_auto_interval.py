"""``switch_interval="auto"``: a short GIL switch interval only while a pipeline is busy."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sluiceway as sw
from sluiceway._core._interval import AUTO_INTERVAL, QUIET, AutoInterval

from .conftest import WAIT


@pytest.fixture
def saved_interval() -> Iterator[float]:
    """The interpreter's interval before the test; restored after it whatever happened."""
    saved = sys.getswitchinterval()
    yield saved
    sys.setswitchinterval(saved)


def until(condition: Callable[[], bool]) -> bool:
    """Wait (real time, bounded) for another thread to make ``condition`` true."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def quiet_periods_pass(
    auto: AutoInterval, now: list[float], wake: Callable[[], None] | None = None
) -> None:
    """Two quiet periods of injected time, each taken up by the lane's thread in turn.

    The first check forgets the touch, the second lets go. ``wake``, if given, wakes the
    lane at once (otherwise it must look by itself within a real quiet period).
    """
    for _ in range(2):
        now[0] += QUIET
        if wake is not None:
            wake()
        if not until(lambda: auto.check_at is None or auto.check_at > now[0]):
            return


def test_the_interval_is_held_from_a_touch_until_a_whole_quiet_period(
    saved_interval: float,
) -> None:
    """Held at the first touch; kept while touches come; given back after a quiet period."""
    now = [100.0]
    holds: list[int] = []
    auto = AutoInterval(lambda: holds.append(1), now=lambda: now[0])
    auto.touch()  # not started yet: nothing would ever give it back
    assert not auto.held
    auto.open()
    assert auto.tick() is None  # nothing held: nothing to check
    auto.touch()
    assert auto.held
    assert holds == [1]
    assert sys.getswitchinterval() == pytest.approx(AUTO_INTERVAL)
    assert auto.tick() == pytest.approx(QUIET)  # the first check is a quiet period away
    now[0] += QUIET
    auto.tick()  # touched since the last check: kept, and the touch is forgotten
    assert auto.held
    now[0] += QUIET / 2
    auto.touch()  # busy again (no second hold: the lane is woken once per hold)
    assert holds == [1]
    now[0] += QUIET / 2
    assert auto.tick() == pytest.approx(QUIET)
    assert auto.held
    now[0] += QUIET
    assert auto.tick() is None  # a whole quiet period with no touch: given back
    assert not auto.held
    assert sys.getswitchinterval() == pytest.approx(saved_interval)
    auto.touch()
    assert auto.held
    assert holds == [1, 1]
    auto.close()
    assert sys.getswitchinterval() == pytest.approx(saved_interval)
    auto.touch()  # after close: never again
    assert not auto.held
    assert sys.getswitchinterval() == pytest.approx(saved_interval)


@pytest.mark.parametrize("priority", [True, False], ids=["priority", "batches"])
def test_a_default_pipeline_holds_the_interval_while_busy_and_restores_it(
    saved_interval: float, priority: bool
) -> None:
    """A priority submission, or a batch cut, holds it; shutdown gives it back."""
    p = sw.Pipeline(lambda batch: None, shards=2, batch_size=4).start()
    try:
        assert sys.getswitchinterval() == pytest.approx(saved_interval)  # idle: untouched
        if priority:
            assert p.submit("urgent", priority=True)
            assert sys.getswitchinterval() == pytest.approx(AUTO_INTERVAL)
        else:
            assert p.submit_many(range(8)) == 8
            assert p.wait_idle(WAIT)
            assert sys.getswitchinterval() == pytest.approx(AUTO_INTERVAL)
    finally:
        p.shutdown()
    assert sys.getswitchinterval() == pytest.approx(saved_interval)


def test_the_lane_thread_gives_the_interval_back_after_a_quiet_period(
    saved_interval: float,
) -> None:
    """The lane's thread checks every quiet period (injected time here) and lets go."""
    p = sw.Pipeline(lambda batch: None, shards=1)
    auto = p._st.auto
    assert auto is not None
    now = [0.0]
    auto.now = lambda: now[0]
    p.start()
    try:
        assert p.submit("urgent", priority=True)
        assert until(lambda: auto.check_at is not None)  # the lane took up the watch
        assert auto.held
        quiet_periods_pass(auto, now, wake=p._st.wake_lane)
        assert until(lambda: not auto.held)
        assert sys.getswitchinterval() == pytest.approx(saved_interval)
    finally:
        p.shutdown()


def test_several_auto_pipelines_restore_the_interpreter_once_all_are_done(
    saved_interval: float,
) -> None:
    """Reference-counted with every other holder: the last one out restores the value."""
    a = sw.Pipeline(print, shards=1).start()
    b = sw.Pipeline(print, shards=1, switch_interval=0.001).start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.001)
        a.submit("x", priority=True)
        assert sys.getswitchinterval() == pytest.approx(AUTO_INTERVAL)  # the smaller wins
        b.shutdown()
        assert sys.getswitchinterval() == pytest.approx(AUTO_INTERVAL)
        a.shutdown()
        assert sys.getswitchinterval() == pytest.approx(saved_interval)
    finally:
        a.shutdown()
        b.shutdown()


def test_a_pipeline_never_started_never_holds_the_interval(saved_interval: float) -> None:
    """Found by review: a priority item submitted before ``start()`` held it for good."""
    p = sw.Pipeline(lambda batch: None, shards=1)
    assert p.submit("urgent", priority=True)
    assert sys.getswitchinterval() == saved_interval
    del p
    gc.collect()
    assert sys.getswitchinterval() == saved_interval


def test_switch_interval_none_never_touches_the_interpreter(saved_interval: float) -> None:
    """``None`` leaves the interpreter alone whatever the traffic."""
    p = sw.Pipeline(lambda batch: None, shards=1, switch_interval=None).start()
    try:
        p.submit("urgent", priority=True)
        p.submit_many(range(100))
        assert p.wait_idle(WAIT)
        assert sys.getswitchinterval() == saved_interval
    finally:
        p.shutdown()


@pytest.mark.parametrize("value", ["fast", "AUTO", 0, -1, True, [0.1]])
def test_bad_switch_intervals_are_config_errors(value: Any) -> None:
    """Anything but "auto", None or seconds > 0 is refused, naming the argument."""
    with pytest.raises(sw.ConfigError, match="switch_interval"):
        sw.Pipeline(print, switch_interval=value)


def test_a_priority_item_is_served_while_every_regular_call_blocks() -> None:
    """Quick calls for a while, then a call that blocks: the lane's thread is still woken."""
    gate = threading.Event()
    calls = [0]
    served = threading.Event()

    def handler(batch: list[Any]) -> None:
        calls[0] += 1
        if calls[0] > 50:
            gate.wait(WAIT)

    p = sw.Pipeline(
        handler, shards=1, batch_size=1, workers=1, priority_handler=lambda x: served.set()
    ).start()
    try:
        p.submit_many(range(60))
        assert until(lambda: calls[0] > 50)  # the only worker is now stuck in a call
        assert p.submit("urgent", priority=True)
        assert served.wait(WAIT)
    finally:
        gate.set()
        p.shutdown()


def _blocking_priority_pipeline(gate: threading.Event, quick: int) -> sw.Pipeline:
    """Priority capacity 10; the item ``quick`` (and only it) blocks on ``gate``."""

    def urgent(item: int) -> None:
        if item == quick:
            gate.wait(WAIT)

    p = sw.Pipeline(
        lambda batch: None,
        shards=1,
        capacity=100,
        priority_ratio=0.1,
        priority_handler=urgent,
        switch_interval=None,
    )
    assert p.submit_many(range(quick + 1), priority=True) == quick + 1
    return p.start()


def test_priority_items_are_counted_at_once_while_a_later_one_blocks() -> None:
    """Found by review: counting in groups held back outcomes and capacity of served items."""
    gate = threading.Event()
    p = _blocking_priority_pipeline(gate, quick=9)
    try:
        assert until(lambda: p.stats().processed == 9)
        assert p.submit(99, priority=True)  # the nine items' capacity is back
    finally:
        gate.set()
        p.shutdown()
    assert p.stats().processed == 11


def test_a_shutdown_timing_out_mid_serve_reports_the_items_served() -> None:
    """Found by review: the report said processed=0 for ten items already handled."""
    gate = threading.Event()

    def urgent(item: int) -> None:
        if item == 10:
            gate.wait(WAIT)

    p = sw.Pipeline(
        lambda batch: None, shards=1, capacity=200, priority_handler=urgent, switch_interval=None
    )
    assert p.submit_many(range(11), priority=True) == 11
    p.start()
    try:
        report = p.shutdown(timeout=0.3)
    finally:
        gate.set()
    assert (report.processed, report.dead_lettered, report.unfinished) == (10, 1, 1)


def test_the_lane_polls_while_regular_work_is_in_flight_and_serves_unwoken() -> None:
    """While a regular call blocks, the lane's thread looks every POLL: no wake-up needed."""
    gate = threading.Event()
    served = threading.Event()
    p = sw.Pipeline(
        lambda batch: gate.wait(WAIT),
        shards=1,
        batch_size=1,
        workers=1,
        priority_handler=lambda item: served.set(),
    ).start()
    st = p._st
    try:
        assert p.submit("regular")
        assert until(lambda: st.prio_polling and st.prio_parked)  # polling, asleep
        woken: list[bool] = []
        real_wake = st.prio_waiter.wake

        class Spy:
            lock = st.prio_waiter.lock

            def wake(self) -> None:
                woken.append(True)
                real_wake()

        st.prio_waiter = Spy()  # type: ignore[assignment]
        assert p.submit("urgent", priority=True)
        assert served.wait(WAIT)
        assert woken == []  # the producer did not wake the lane: its poll found the item
    finally:
        gate.set()
        p.shutdown()


def test_a_pending_priority_retry_does_not_keep_the_interval_held(
    saved_interval: float,
) -> None:
    """Found by review: with a retry due later, the lane slept past its quiet-period check."""
    p = sw.Pipeline(
        lambda batch: None,
        shards=1,
        priority_handler=lambda item: 1 / 0,
        retry=sw.Retry(attempts=2, backoff=600, jitter=False),
    )
    auto = p._st.auto
    assert auto is not None
    now = [0.0]
    auto.now = lambda: now[0]
    p.start()
    try:
        assert p.submit("urgent", priority=True)
        assert until(lambda: p._lane.next_retry() is not None)  # failed once: retry in 600 s
        assert until(lambda: auto.check_at is not None and p._st.prio_parked)
        quiet_periods_pass(auto, now)  # no wake-up: the lane must look by itself
        assert not auto.held
        assert sys.getswitchinterval() == pytest.approx(saved_interval)
    finally:
        p.shutdown(timeout=0.5)
