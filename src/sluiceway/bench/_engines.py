"""The engines measured side by side: sluiceway, its two everyday rivals, and the ceiling.

Each engine runs one phase: it builds its pipeline around a :class:`Sink`, lets the shared
producer loop submit into it (the asyncio engine runs the same loop as a coroutine; the
ceiling does the work inline), drains fully outside the timing, and reports what happened.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._config import BenchConfig
from ._workload import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    KEYS,
    PAYLOAD,
    PRIORITY_EVERY,
    Produced,
    Sink,
    produce,
)

__all__ = ["ENGINE_TYPES", "Engine", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One engine's phase: producer figures, processed within the window, after the drain."""

    produced: Produced
    processed_in_window: int
    processed: int
    dead_lettered: int
    window: float


class Engine:
    """A pipeline under test. Subclasses fill in ``open``/``submit``/``drain``."""

    name = "engine"
    priority_lane = True  # whether priority events take a way of their own past the batches

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.sink = Sink("cpu")

    # live figures for the sampler thread
    def depth(self) -> int:
        """Events queued right now."""
        return 0

    def batch_size(self) -> float:
        """The batch size in use right now."""
        return float(self.cfg.batch_size)

    def run(self, sink: Sink, seconds: float, rate: float | None) -> Outcome:
        """Run one phase: open, produce, drain, close."""
        self.sink = sink
        submit = self.open(sink)
        produced = produce(submit, seconds, rate)
        in_window = sink.processed()
        dead = self.drain()
        return Outcome(produced, in_window, sink.processed(), dead, produced.seconds)

    def open(self, sink: Sink) -> Callable[[Any, bool], bool]:
        """Build the pipeline; return its submit(event, priority) -> accepted."""
        raise NotImplementedError

    def drain(self) -> int:
        """Finish every accepted event and stop; return how many were dead-lettered."""
        raise NotImplementedError


class SluicewayEngine(Engine):
    """sluiceway with the seed's settings; the two process-wide options as the bench says.

    By default both are the Pipeline's own defaults (``switch_interval="auto"``, the
    interpreter's gc threshold), so the figures are what a user gets with no tuning.
    """

    name = "sluiceway"

    def open(self, sink: Sink) -> Callable[[Any, bool], bool]:
        """Start a Pipeline."""
        from .. import Pipeline

        cfg = self.cfg
        self.pipeline = Pipeline(
            sink.batch,
            shards=cfg.shards,
            batch_size=cfg.batch_size,
            max_delay=cfg.max_delay,
            capacity=cfg.capacity,
            priority_ratio=cfg.priority_ratio,
            priority_handler=sink.priority,
            switch_interval=cfg.switch_interval,  # type: ignore[arg-type]
            gc_threshold=cfg.gc_threshold or None,
        ).start()
        return self.pipeline.submit

    def depth(self) -> int:
        """Queued plus in-handler events."""
        return self.pipeline.stats().in_flight

    def batch_size(self) -> float:
        """The pipeline's current batch size."""
        return float(self.pipeline.stats().batch_size)

    def drain(self) -> int:
        """Shut the pipeline down (every accepted event finishes)."""
        report = self.pipeline.shutdown()
        return report.dead_lettered


class SluicewayBulkEngine(SluicewayEngine):
    """sluiceway fed with ``submit_many`` in chunks (``BenchConfig.submit_many`` events)."""

    name = "sluiceway-bulk"
    priority_lane = False  # submit_many sends every event down the regular lane

    def run(self, sink: Sink, seconds: float, rate: float | None) -> Outcome:
        """Produce chunks of events; a refused suffix is retried after a back-off."""
        self.sink = sink
        self.open(sink)
        submit_many = self.pipeline.submit_many
        now_ns, clock, sleep = time.monotonic_ns, time.perf_counter, time.sleep
        chunk = max(1, self.cfg.submit_many)
        refusals = i = 0
        start = clock()
        end = start + seconds
        while clock() < end:
            events = [(j, KEYS[j & 1023], now_ns(), PAYLOAD) for j in range(i, i + chunk)]
            i += chunk
            delay = BACKOFF_FIRST
            while events:
                k = submit_many(events)
                if k == len(events):
                    break
                refusals += 1
                events = events[k:]
                sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        produced = Produced(i, refusals, clock() - start)
        in_window = sink.processed()
        dead = self.drain()
        return Outcome(produced, in_window, sink.processed(), dead, produced.seconds)


class QueueEngine(Engine):
    """A ``queue.Queue`` per shard, a consumer thread per shard, a priority queue+thread."""

    name = "queue"

    def open(self, sink: Sink) -> Callable[[Any, bool], bool]:
        """Start the consumer threads."""
        cfg = self.cfg
        per_shard = cfg.capacity // cfg.shards
        self.queues: list[queue.Queue[Any]] = [queue.Queue(per_shard) for _ in range(cfg.shards)]
        self.pqueue: queue.Queue[Any] = queue.Queue(int(cfg.capacity * cfg.priority_ratio) + 1)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._consume, args=(q,), daemon=True) for q in self.queues
        ]
        self.threads.append(threading.Thread(target=self._consume_priority, daemon=True))
        for t in self.threads:
            t.start()
        queues = self.queues
        n = len(queues)
        puts = [q.put_nowait for q in queues]
        pput = self.pqueue.put_nowait
        counter = iter(range(1 << 62))

        def submit(event: Any, priority: bool) -> bool:
            try:
                if priority:
                    pput(event)
                else:
                    puts[next(counter) % n](event)
            except queue.Full:
                return False
            return True

        return submit

    def _consume(self, q: queue.Queue[Any]) -> None:
        size, delay, handle = self.cfg.batch_size, self.cfg.max_delay, self.sink.batch
        while True:
            try:
                first = q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            batch = [first]
            deadline = time.monotonic() + delay
            while len(batch) < size:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        batch.append(q.get(timeout=left))
                    except queue.Empty:
                        break
            handle(batch)

    def _consume_priority(self) -> None:
        while True:
            try:
                event = self.pqueue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            self.sink.priority(event)

    def depth(self) -> int:
        """Events in the queues."""
        return sum(q.qsize() for q in self.queues) + self.pqueue.qsize()

    def drain(self) -> int:
        """Wait for the queues to empty, then stop the threads."""
        while self.depth():
            time.sleep(0.01)
        self.stop.set()
        for t in self.threads:
            t.join()
        return 0


class AsyncioEngine(Engine):
    """An ``asyncio.Queue`` per shard, a consumer task per shard; the producer a coroutine.

    The io handler's sleep runs in the default executor so that it waits without blocking
    the loop, as an asyncio service would await its database driver.
    """

    name = "asyncio"

    def run(self, sink: Sink, seconds: float, rate: float | None) -> Outcome:
        """Run the phase inside a fresh event loop."""
        self.sink = sink
        self.queues: list[asyncio.Queue[Any]] = []
        return asyncio.run(self._main(sink, seconds, rate))

    async def _main(self, sink: Sink, seconds: float, rate: float | None) -> Outcome:
        cfg = self.cfg
        per_shard = cfg.capacity // cfg.shards
        self.queues = [asyncio.Queue(per_shard) for _ in range(cfg.shards)]
        pq: asyncio.Queue[Any] = asyncio.Queue(int(cfg.capacity * cfg.priority_ratio) + 1)
        loop = asyncio.get_running_loop()
        if sink.kind == "io":

            async def handle(batch: list[Any]) -> None:
                await loop.run_in_executor(None, sink.io, batch)
        else:

            async def handle(batch: list[Any]) -> None:
                sink.cpu(batch)

        tasks = [asyncio.create_task(self._consume(q, handle)) for q in self.queues]
        tasks.append(asyncio.create_task(self._consume_priority(pq, sink)))
        produced = await self._produce(pq, seconds, rate)
        in_window = sink.processed()
        for q in [*self.queues, pq]:
            await q.join()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return Outcome(produced, in_window, sink.processed(), 0, produced.seconds)

    async def _produce(
        self, pq: asyncio.Queue[Any], seconds: float, rate: float | None
    ) -> Produced:
        now_ns, clock = time.monotonic_ns, time.perf_counter
        puts = [q.put_nowait for q in self.queues]
        n = len(puts)
        chunk = 512 if rate is None else max(8, min(512, int(rate / 2000)))
        refusals, i = 0, 0
        start = clock()
        end = start + seconds
        while True:
            for i in range(i, i + chunk):  # noqa: B020 - resumes where it left off
                delay = BACKOFF_FIRST
                while True:
                    event = (i, KEYS[i & 1023], now_ns(), PAYLOAD)
                    try:
                        if i % PRIORITY_EVERY == 0:
                            pq.put_nowait(event)
                        else:
                            puts[i % n](event)
                        break
                    except asyncio.QueueFull:
                        refusals += 1
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, BACKOFF_MAX)
            i += 1
            await asyncio.sleep(0)  # let the consumers run, as a real service's loop would
            now = clock()
            if now >= end:
                break
            if rate is not None:
                ahead = start + i / rate - now
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return Produced(i, refusals, clock() - start)

    async def _consume(self, q: asyncio.Queue[Any], handle: Any) -> None:
        size, delay = self.cfg.batch_size, self.cfg.max_delay
        while True:
            batch = [await q.get()]
            deadline = time.monotonic() + delay
            while len(batch) < size:
                if q.empty():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(q.get(), left))
                    except TimeoutError:
                        break
                else:
                    batch.append(q.get_nowait())
            await handle(batch)
            for _ in batch:
                q.task_done()

    async def _consume_priority(self, pq: asyncio.Queue[Any], sink: Sink) -> None:
        while True:
            event = await pq.get()
            sink.priority(event)
            pq.task_done()

    def depth(self) -> int:
        """Events in the queues (read from another thread: approximate)."""
        return sum(q.qsize() for q in self.queues)


class CeilingEngine(Engine):
    """No queueing: build each event and do the handler's work inline, one thread."""

    name = "ceiling"
    priority_lane = False  # no queues: a priority event is handled inline like the rest

    def run(self, sink: Sink, seconds: float, rate: float | None) -> Outcome:
        """The producer loop with the handler inlined (batches of ``batch_size``)."""
        self.sink = sink
        now_ns, clock, sleep = time.monotonic_ns, time.perf_counter, time.sleep
        handle, handle_priority = sink.batch, sink.priority
        size = self.cfg.batch_size
        chunk = 512 if rate is None else max(8, min(512, int(rate / 2000)))
        batch: list[Any] = []
        append = batch.append
        i = 0
        start = clock()
        end = start + seconds
        while True:
            for i in range(i, i + chunk):  # noqa: B020 - resumes where it left off
                event = (i, KEYS[i & 1023], now_ns(), PAYLOAD)
                if i % PRIORITY_EVERY == 0:
                    handle_priority(event)
                else:
                    append(event)
                    if len(batch) == size:
                        handle(batch[:])
                        batch.clear()
            i += 1
            now = clock()
            if now >= end:
                break
            if rate is not None:
                ahead = start + i / rate - now
                if ahead > 0:
                    sleep(ahead)
        if batch:
            handle(batch[:])
        produced = Produced(i, 0, clock() - start)
        done = sink.processed()
        return Outcome(produced, done, done, 0, produced.seconds)


ENGINE_TYPES: dict[str, type[Engine]] = {
    e.name: e
    for e in (SluicewayEngine, SluicewayBulkEngine, QueueEngine, AsyncioEngine, CeilingEngine)
}
