"""Constructor validation: wrong values and types raise errors that name the argument."""

from __future__ import annotations

import math
from typing import Any

import pytest

import sluiceway as sw


def noop(batch: list[Any]) -> None:
    """A handler that does nothing."""


@pytest.mark.parametrize(
    ("kwargs", "argument", "error"),
    [
        ({"shards": 0}, "shards", ValueError),
        ({"shards": 2.5}, "shards", TypeError),
        ({"batch_size": 0}, "batch_size", ValueError),
        ({"batch_size": True}, "batch_size", TypeError),
        ({"max_delay": -0.1}, "max_delay", ValueError),
        ({"max_delay": math.inf}, "max_delay", ValueError),
        ({"max_delay": "5ms"}, "max_delay", TypeError),
        ({"capacity": 0}, "capacity", ValueError),
        ({"capacity": 4, "shards": 8}, "capacity", ValueError),
        ({"priority_ratio": 0}, "priority_ratio", ValueError),
        ({"priority_ratio": 1.0}, "priority_ratio", ValueError),
        ({"priority_ratio": "x"}, "priority_ratio", TypeError),
        ({"priority_handler": 3}, "priority_handler", TypeError),
        ({"key": "id"}, "key", TypeError),
        ({"workers": 0}, "workers", ValueError),
        ({"clock": object()}, "clock", TypeError),
        ({"dead_letter": []}, "dead_letter", TypeError),
        ({"switch_interval": -1}, "switch_interval", ValueError),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], argument: str, error: type) -> None:
    """Each bad argument raises the documented type, with its name in the message."""
    with pytest.raises(error, match=argument) as info:
        sw.Pipeline(noop, **kwargs)
    assert isinstance(info.value, sw.ConfigError)
    assert info.value.argument == argument


def test_handler_must_be_callable() -> None:
    """A handler that cannot be called is a TypeError naming ``handler``."""
    with pytest.raises(TypeError, match="handler"):
        sw.Pipeline(42)  # type: ignore[arg-type]


def test_priority_capacity_is_ceil_of_ratio() -> None:
    """The priority lane holds ceil(capacity * priority_ratio) items."""
    p = sw.Pipeline(noop, capacity=1000, priority_ratio=0.0015, shards=1)
    assert p.stats().priority_capacity == math.ceil(1000 * 0.0015) == 2
