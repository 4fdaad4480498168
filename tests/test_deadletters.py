"""Dead-letter sinks: JSON Lines, any callable, and a sink that itself fails."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import sluiceway as sw

from .conftest import WAIT


def _always_fail(batch: list[Any]) -> None:
    raise ValueError("nope")


def test_jsonl_sink_appends_one_line_per_record(tmp_path: Path) -> None:
    """Each dead letter is a JSON line with item, reason, error and attempts."""
    path = tmp_path / "dead.jsonl"
    sink = sw.JsonlDeadLetters(path)
    with sw.Pipeline(_always_fail, shards=1, batch_size=2, dead_letter=sink) as p:
        p.submit_many([{"id": 1}, {"id": 2}])
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["item"] for x in lines] == [{"id": 1}, {"id": 2}]
    assert {x["reason"] for x in lines} == {"handler-error"}
    assert lines[0]["error_type"] == "ValueError"
    assert lines[0]["error_message"] == "nope"
    assert "Traceback" in lines[0]["traceback"]
    assert sink.read() == lines


def test_unserialisable_item_is_written_as_repr(tmp_path: Path) -> None:
    """An item json cannot encode is kept as its repr, never dropped."""
    sink = sw.JsonlDeadLetters(tmp_path / "d.jsonl")
    with sw.Pipeline(_always_fail, shards=1, batch_size=1, dead_letter=sink) as p:
        p.submit(object())
        p.submit({1, 2})
    records = sink.read()
    assert len(records) == 2
    assert all("item_repr" in r and "item" not in r for r in records)
    assert records[1]["item_repr"] == "{1, 2}"


def test_custom_serializer(tmp_path: Path) -> None:
    """A user serializer decides how items are written."""
    sink = sw.JsonlDeadLetters(tmp_path / "d.jsonl", serialize=lambda item: {"v": sorted(item)})
    with sw.Pipeline(_always_fail, shards=1, batch_size=1, dead_letter=sink) as p:
        p.submit({3, 1, 2})
    assert sink.read()[0]["item"] == {"v": [1, 2, 3]}


def test_any_callable_is_a_sink() -> None:
    """A plain function receives the DeadLetter records."""
    got: list[sw.DeadLetter] = []
    lock = threading.Lock()

    def sink(records: list[sw.DeadLetter]) -> None:
        with lock:
            got.extend(records)

    with sw.Pipeline(_always_fail, shards=1, batch_size=3, dead_letter=sink) as p:
        p.submit_many("abc")
    assert [d.item for d in got] == ["a", "b", "c"]
    try:
        _ = p.dead_letters
    except AttributeError:
        pass
    else:
        raise AssertionError("dead_letters exists only for the in-memory default")


def test_failing_sink_is_retried_then_records_are_kept_and_reported() -> None:
    """A sink that raises: retried; then records are held in memory and reported."""
    calls = 0
    good = threading.Event()
    delivered: list[sw.DeadLetter] = []

    def sink(records: list[sw.DeadLetter]) -> None:
        nonlocal calls
        calls += 1
        if not good.is_set():
            raise OSError("disk full")
        delivered.extend(records)

    p = sw.Pipeline(_always_fail, shards=1, batch_size=2, dead_letter=sink).start()
    p.submit_many([1, 2])
    assert p.wait_idle(WAIT)
    assert calls == 3  # retried
    assert [d.item for d in p.undelivered_dead_letters()] == [1, 2]
    assert p.stats().dead_letters_undelivered == 2
    assert p.stats().dead_lettered == 2  # still counted: the items have their outcome
    good.set()
    p.submit_many([3, 4])  # the next delivery carries the backlog along
    report = p.shutdown()
    assert [d.item for d in delivered] == [1, 2, 3, 4]
    assert report.undelivered == 0
    assert report.lost == 0


def test_memory_sink_is_bounded_and_counts_overflow() -> None:
    """The in-memory sink keeps the newest records and counts what it let go."""
    sink = sw.MemoryDeadLetters(maxlen=3)
    with sw.Pipeline(_always_fail, shards=1, batch_size=1, dead_letter=sink) as p:
        p.submit_many(range(5))
    assert [d.item for d in sink] == [2, 3, 4]
    assert (sink.total, sink.overflow, len(sink)) == (5, 2, 3)


def test_memory_sink_repr_shows_kept_total_and_bound() -> None:
    """``repr`` of the in-memory sink says how many records it keeps, has seen, and may keep."""
    sink = sw.MemoryDeadLetters(maxlen=2)
    assert repr(sink) == "MemoryDeadLetters(kept=0, total=0, maxlen=2)"
    with sw.Pipeline(_always_fail, shards=1, batch_size=3, dead_letter=sink) as p:
        p.submit_many([1, 2, 3])
    assert repr(sink) == "MemoryDeadLetters(kept=2, total=3, maxlen=2)"
    assert sink.overflow == 1


def test_jsonl_sink_repr_shows_path_and_records_written(tmp_path: Path) -> None:
    """``repr`` of the JSON Lines sink names its file and counts the records written."""
    path = tmp_path / "dead.jsonl"
    sink = sw.JsonlDeadLetters(path)
    assert repr(sink) == f"JsonlDeadLetters(path={str(path)!r}, written=0)"
    with sw.Pipeline(_always_fail, shards=1, batch_size=2, dead_letter=sink) as p:
        p.submit_many([{"id": 1}, {"id": 2}])
    assert repr(sink) == f"JsonlDeadLetters(path={str(path)!r}, written=2)"
    assert len(sink.read()) == 2
