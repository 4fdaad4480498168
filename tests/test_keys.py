"""The key function's contract: keys are computed before any capacity is taken."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import sluiceway as sw

from .conftest import Recorder


def _key(event: dict[str, Any]) -> Any:
    return event["user"]


@pytest.mark.parametrize("call", ["submit_many", "submit_tracked", "on_done"])
def test_a_failing_key_admits_nothing_of_the_call(recorder: Recorder, call: str) -> None:
    """A key that raises part-way raises InvalidItem and admits none of the call's items."""
    events: list[Any] = [{"user": i} for i in range(5)] + [{"nouser": 1}] + [{"user": 9}]
    with sw.Pipeline(recorder, shards=2, capacity=64, key=_key, max_delay=0.001) as p:
        calls: dict[str, Callable[[], object]] = {
            "submit_many": lambda: p.submit_many(events),
            "submit_tracked": lambda: p.submit_tracked(events),
            "on_done": lambda: p.submit_many(events, on_done=lambda c: None),
        }
        with pytest.raises(sw.InvalidItem) as info:
            calls[call]()
        assert info.value.index == 5
        assert isinstance(info.value.__cause__, KeyError)
        assert isinstance(info.value, ValueError)
        assert p.stats().accepted == 0
        assert p.submit_many([{"user": i} for i in range(64)]) == 64  # no capacity leaked
    report = p.shutdown()
    assert report.lost == 0
    assert report.processed == 64


def test_an_unhashable_key_is_an_invalid_item(recorder: Recorder) -> None:
    """A key function returning an unhashable value is refused the same way, per item too."""
    with sw.Pipeline(recorder, shards=2, capacity=16, key=lambda e: e) as p:
        with pytest.raises(sw.InvalidItem) as info:
            p.submit([1, 2])
        assert info.value.index == 0
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(sw.InvalidItem):
            p.submit_many([1, 2, [3]])
        assert p.stats().accepted == 0
        assert p.submit(7)
    assert p.shutdown().processed == 1


def test_accepting_follows_shutdown(recorder: Recorder) -> None:
    """``accepting`` is the public readiness flag: True while running, False once closing."""
    p = sw.Pipeline(recorder).start()
    assert p.accepting
    p.shutdown()
    assert not p.accepting
