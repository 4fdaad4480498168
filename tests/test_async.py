"""asyncio: the same behaviour for ``def`` and ``async def`` handlers, plus aput and async with.

Tests marked with the ``kind`` fixture run once with a plain handler and once with an
``async def`` one (on the pipeline's private loop), as anyio runs its suite per backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

import sluiceway as sw
from sluiceway.testing import FakeClock

from .conftest import WAIT

Handler = Callable[[list[Any]], Any]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Run the test with a sync handler and with an async one."""
    return str(request.param)


def as_kind(kind: str, fn: Handler) -> Handler:
    """``fn`` itself, or an ``async def`` doing the same after yielding to the loop."""
    if kind == "sync":
        return fn

    async def handler(batch: list[Any]) -> Any:
        await asyncio.sleep(0)
        return fn(batch)

    return handler


class Sink:
    """Records batches; optionally fails."""

    def __init__(self) -> None:
        """Empty."""
        self.batches: list[list[Any]] = []
        self.fail: BaseException | None = None
        self.cond = threading.Condition()

    def __call__(self, batch: list[Any]) -> None:
        """Record or raise."""
        if self.fail is not None:
            raise self.fail
        with self.cond:
            self.batches.append(list(batch))
            self.cond.notify_all()

    @property
    def items(self) -> list[Any]:
        """All items handled."""
        with self.cond:
            return [x for b in self.batches for x in b]

    def wait(self, n: int) -> bool:
        """Until ``n`` items were handled."""
        with self.cond:
            return self.cond.wait_for(lambda: sum(map(len, self.batches)) >= n, WAIT)


def test_every_item_is_processed_once(kind: str) -> None:
    """Bulk and single submissions all reach the handler exactly once."""
    sink = Sink()
    with sw.Pipeline(as_kind(kind, sink), shards=4, batch_size=16) as p:
        p.submit_many(range(500))
        for i in range(500, 600):
            p.submit(i)
    assert sorted(sink.items) == list(range(600))


def test_batches_by_size_and_by_time(kind: str, clock: FakeClock) -> None:
    """A full batch goes at once; a partial one after max_delay on the fake clock."""
    sink = Sink()
    with sw.Pipeline(
        as_kind(kind, sink), shards=1, batch_size=4, max_delay=1.0, clock=clock, adaptive=False
    ) as p:
        p.submit_many(range(6))
        assert sink.wait(4)
        assert clock.wait_for_sleepers(1)
        clock.advance(1.0)
        assert sink.wait(6)
    assert sink.batches == [[0, 1, 2, 3], [4, 5]]


def test_per_key_order(kind: str) -> None:
    """Keyed items keep submission order with either handler kind."""
    sink = Sink()
    events = [(i % 7, i) for i in range(700)]
    with sw.Pipeline(as_kind(kind, sink), shards=3, batch_size=5, key=lambda e: e[0]) as p:
        for e in events:
            assert p.submit(e)
    per_key: dict[int, list[int]] = defaultdict(list)
    for k, i in sink.items:
        per_key[k].append(i)
    assert all(v == sorted(v) for v in per_key.values())


def test_retry_then_success(kind: str, clock: FakeClock) -> None:
    """A failing call is retried after its backoff, whatever the handler kind."""
    sink = Sink()
    sink.fail = ConnectionError("down")
    retry = sw.Retry(attempts=3, backoff=0.5, jitter=False)
    with sw.Pipeline(as_kind(kind, sink), shards=1, batch_size=2, clock=clock, retry=retry) as p:
        p.submit_many(["a", "b"])
        assert clock.wait_for_sleepers(1)
        sink.fail = None
        clock.advance(0.5)
        assert sink.wait(2)
    assert p.stats().retries == 1


def test_failure_is_dead_lettered(kind: str) -> None:
    """Without a retry policy, a raising handler dead-letters its batch."""
    sink = Sink()
    sink.fail = ValueError("bad")
    with sw.Pipeline(as_kind(kind, sink), shards=1, batch_size=3) as p:
        p.submit_many([1, 2, 3])
    assert [d.item for d in p.dead_letters.records()] == [1, 2, 3]
    assert p.dead_letters.records()[0].error_type == "ValueError"


def test_async_priority_handler() -> None:
    """An ``async def`` priority handler is awaited on the loop."""
    seen: list[Any] = []
    done = threading.Event()

    async def urgent(item: Any) -> None:
        await asyncio.sleep(0)
        seen.append(item)
        done.set()

    with sw.Pipeline(lambda b: None, priority_handler=urgent) as p:
        p.submit("now", priority=True)
        assert done.wait(WAIT)
    assert seen == ["now"]


def test_async_with_aput_and_the_running_loop() -> None:
    """``async with`` starts and drains; handlers run on the running loop; aput waits."""

    async def main() -> tuple[list[Any], sw.DrainReport, bool]:
        loop = asyncio.get_running_loop()
        got: list[Any] = []
        gate = asyncio.Event()
        on_loop: list[bool] = []

        async def handler(batch: list[Any]) -> None:
            on_loop.append(asyncio.get_running_loop() is loop)
            await gate.wait()
            got.extend(batch)

        async with sw.Pipeline(handler, shards=1, batch_size=2, capacity=2, max_delay=0) as p:
            assert p.submit(1)
            assert p.submit(2)
            assert not p.submit(3)  # full: the batch is stuck behind the gate
            waiter = asyncio.create_task(p.aput(3, timeout=WAIT))
            await asyncio.sleep(0.01)
            assert not waiter.done()  # waiting, and the loop is free meanwhile
            gate.set()
            await waiter
            report = p.stats()
        return got, p.shutdown(), all(on_loop) and report.accepted >= 3

    got, report, ok = asyncio.run(main())
    assert sorted(got)[:3] == [1, 2, 3]
    assert report.lost == 0
    assert ok


def test_blocking_calls_on_the_handlers_loop_are_refused() -> None:
    """shutdown()/put() on the loop the async handlers need raise instead of deadlocking."""

    async def main() -> None:
        async def handler(batch: list[Any]) -> None:
            await asyncio.sleep(0)

        p = sw.Pipeline(handler, capacity=1, shards=1)
        p.start()
        p.submit(1)
        with pytest.raises(sw.SluicewayError, match="ashutdown"):
            p.shutdown()
        with pytest.raises(sw.SluicewayError, match="aput"):
            p.put(2)
        report = await p.ashutdown()
        assert report.processed == 1

    asyncio.run(main())


def test_aput_times_out_with_full() -> None:
    """While the lane stays full, aput raises Full after its timeout."""

    async def main() -> None:
        gate = asyncio.Event()

        async def handler(batch: list[Any]) -> None:
            await gate.wait()

        async with sw.Pipeline(handler, shards=1, batch_size=1, capacity=1, max_delay=0) as p:
            assert p.submit(1)
            with pytest.raises(sw.Full):
                await p.aput(2, timeout=0.05)
            gate.set()

    asyncio.run(main())


def test_aput_raises_closed_after_shutdown() -> None:
    """On a shut pipeline, aput raises Closed."""

    async def main() -> None:
        p = sw.Pipeline(lambda b: None, capacity=1, shards=1)
        await p.ashutdown()
        with pytest.raises(sw.Closed):
            await p.aput(1)

    asyncio.run(main())
