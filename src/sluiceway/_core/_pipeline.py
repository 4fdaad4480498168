"""The public ``Pipeline``: construction, lifecycle and introspection around the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

from .._clock import Clock, SystemClock
from .._deadletters import MemoryDeadLetters
from .._errors import Closed, ConfigError, ConfigTypeError, Full
from .._policy import Breaker, Retry
from .._records import DeadLetter, DrainReport, ShardStats, Stats
from .._types import BatchHandler, ItemHandler, KeyFunc
from ._admit import make_submit, make_submit_many, submit_tracked
from ._aio import AsyncWaiter, LoopHost, is_async, refuse_on_loop
from ._balance import Balancer
from ._claim import Scheduler, Signal, Waiter
from ._completion import Completion
from ._config import Config, check_positive_int, check_seconds
from ._handle import Workers
from ._histogram import HistogramSnapshot
from ._interval import AutoInterval
from ._lifecycle import Lifecycle
from ._orphans import watch
from ._outcome import Outcomes
from ._priority import PriorityLane
from ._settle import Settle
from ._sink import Sink
from ._state import State
from ._waiters import wait_finished

__all__ = ["Pipeline"]


class Pipeline:
    """A sharded, batching, priority-laned, backpressured pipeline.

    ``submit`` admits an item or refuses it at once (False); admitted items are cut into
    batches per shard by size (``batch_size``) or age (``max_delay``), and ``handler`` is
    called with each batch on a worker thread. ``submit(item, priority=True)`` sends an item
    down the priority lane: its own capacity (``ceil(capacity * priority_ratio)``) and one
    ``priority_handler(item)`` call per item, ahead of regular work.

    Every admitted item ends exactly once as processed (its handler call returned) or
    dead-lettered (see ``dead_letters``), including at shutdown. ``retry`` (a
    :class:`Retry`) retries failed batches with backoff and isolates poison items;
    ``breaker`` (a :class:`Breaker`) stops calling a failing shard for a cool-down;
    ``dead_letter`` is any callable taking a list of :class:`DeadLetter` (default: kept in
    memory, ``p.dead_letters``).

    Every ``balance_interval`` seconds, with ``adaptive``, the batch size moves between
    ``min_batch`` and ``max_batch`` (starting at ``batch_size``) with queue depth and
    measured batch time; with ``steal``, a backlogged shard gives whole batches (unkeyed)
    or whole key partitions with their queues (keyed, so per-key order holds) to an idle
    one. See ``docs/balance.md``.

    ``workers`` caps the threads that call the handler (default: one a shard; only as many
    as the handlers can use are kept awake). ``switch_interval`` is the interpreter's GIL
    switch interval (``sys.setswitchinterval``) while the pipeline runs: a busy thread lets
    go of the GIL only that often, so it bounds how long a priority item waits under load.
    The default ``"auto"`` holds 0.2 ms while the pipeline is busy (from a priority
    submission or a batch cut until a quiet second has passed; measured: priority p99 under
    2 ms in every phase of ``sluiceway bench`` instead of 5-10 ms, and faster
    ``submit_many``); a number holds that interval for the whole run; ``None`` never
    touches the interpreter. ``gc_threshold``, if given, sets the cyclic garbage
    collector's first threshold (``gc.set_threshold``) while the pipeline runs (opt-in: it
    trades throughput against longer collections; see ``docs/performance.md``). Both are
    process-wide: while several pipelines hold them the most demanding request applies
    (smallest interval, largest threshold), and the
    interpreter's own values come back when the last of them shuts down.

    Lifecycle: call ``shutdown()`` (or use ``with``/``async with``). A started pipeline that
    is garbage-collected without it issues a ``ResourceWarning`` and is shut down by a
    background thread (its accepted items are drained first, for at most
    ``drain_timeout``, default 30 s). At interpreter exit, pipelines still running are shut
    down the same way and a line is logged (logger ``"sluiceway"``) with how many items
    were drained and dead-lettered. ``shutdown()`` may be called from several threads at
    once, each waiting for at most its own ``timeout``; it raises ``SluicewayError`` on one
    of the pipeline's own threads (in a handler or callback). In a child made by
    ``os.fork()``, a pipeline of the parent raises ``Closed``: create a new one there.
    """

    def __init__(
        self,
        handler: BatchHandler,
        *,
        shards: int = 8,
        batch_size: int = 64,
        max_delay: float = 0.005,
        capacity: int = 65_536,
        priority_ratio: float = 0.1,
        priority_handler: ItemHandler | None = None,
        key: KeyFunc | None = None,
        clock: Clock | None = None,
        workers: int | None = None,
        adaptive: bool = True,
        min_batch: int | None = None,
        max_batch: int | None = None,
        steal: bool = True,
        balance_interval: float = 0.01,
        retry: Retry | None = None,
        breaker: Breaker | None = None,
        dead_letter: Callable[[list[DeadLetter]], object] | None = None,
        switch_interval: float | Literal["auto"] | None = "auto",
        gc_threshold: int | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        self._host = LoopHost()
        self._uses_loop = False
        if callable(handler) and is_async(handler):
            handler = self._host.wrap(handler)  # type: ignore[arg-type]
            self._uses_loop = True
        if priority_handler is not None and is_async(priority_handler):
            priority_handler = self._host.wrap(priority_handler)  # type: ignore[arg-type]
            self._uses_loop = True
        # Completions refuse a blocking wait() on the handlers' loop (see submit_tracked).
        self._completion_guard: Callable[[], None] | None = None
        if self._uses_loop:
            self._completion_guard = partial(
                refuse_on_loop, self._host, "Completion.wait", "await completion"
            )
        self._cfg = Config.build(
            handler,
            shards=shards,
            batch_size=batch_size,
            max_delay=max_delay,
            capacity=capacity,
            priority_ratio=priority_ratio,
            priority_handler=priority_handler,
            key=key,
            workers=workers,
        )
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigTypeError("clock", "must have now() and wait(lock, timeout)")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigTypeError("retry", "must be a sluiceway.Retry or None")
        if breaker is not None and not isinstance(breaker, Breaker):
            raise ConfigTypeError("breaker", "must be a sluiceway.Breaker or None")
        if dead_letter is not None and not callable(dead_letter):
            raise ConfigTypeError("dead_letter", "must be callable with a list of DeadLetter")
        auto = isinstance(switch_interval, str)
        if auto and switch_interval != "auto":
            raise ConfigTypeError("switch_interval", 'must be "auto", None or seconds > 0')
        self._switch_interval = (
            None
            if auto
            else check_seconds("switch_interval", switch_interval, allow_none=True, setting=True)
        )
        if self._switch_interval == 0:
            raise ConfigTypeError("switch_interval", "must be > 0")
        self._gc_threshold = (
            None if gc_threshold is None else check_positive_int("gc_threshold", gc_threshold)
        )
        self._drain_timeout = check_seconds(
            "drain_timeout", drain_timeout, allow_none=True, setting=True
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._memory = MemoryDeadLetters() if dead_letter is None else None
        sink = self._memory if self._memory is not None else dead_letter
        assert sink is not None
        st = self._st = State(self._cfg, self._clock)
        if auto:
            st.auto = AutoInterval(st.wake_lane)
        sched = self._sched = Scheduler(st, breaker)
        st.install(sched.batch_full, lambda shard: Signal(sched, shard))
        lo = min(16, self._cfg.batch_size) if min_batch is None else min_batch
        hi = max(256, self._cfg.batch_size) if max_batch is None else max_batch
        lo = check_positive_int("min_batch", lo)
        hi = check_positive_int("max_batch", hi)
        if not lo <= self._cfg.batch_size <= hi:
            raise ConfigError("batch_size", f"must lie within min_batch..max_batch ({lo}..{hi})")
        interval = check_seconds("balance_interval", balance_interval, setting=True)
        assert interval is not None
        self._balancer = Balancer(
            st,
            adaptive=bool(adaptive),
            min_batch=lo,
            max_batch=hi,
            steal=bool(steal),
            interval=interval,
        )
        self._sink = Sink(sink, owner=st)
        self._outcomes = Outcomes(st, self._sink, sched)
        self._settle = Settle(self._outcomes, retry, self._host)
        self._lane = PriorityLane(st, self._settle)
        self._workers = Workers(st, sched, self._settle, self._lane, self._balancer)
        self._life = Lifecycle(
            st,
            sched,
            self._clock,
            self._settle,
            self._lane,
            self._workers,
            self._host,
            uses_loop=self._uses_loop,
            switch_interval=self._switch_interval,
            gc_threshold=self._gc_threshold,
            drain_timeout=self._drain_timeout,
        )
        # The hot paths are closures specialised for this pipeline's shape; they shadow
        # the documented methods below on the instance.
        self.submit = make_submit(st, sched, self._lane)  # type: ignore[method-assign]
        self.submit_many = make_submit_many(st, sched, self._lane)  # type: ignore[method-assign]

    # -- admission -------------------------------------------------------------------------
    def submit(self, item: Any, priority: bool = False) -> bool:
        """Admit ``item`` or refuse it at once. Never blocks.

        Returns False when the item's lane (or, keyed, its shard) is full, or once shutdown
        has begun. A refused item is never processed.
        """
        raise NotImplementedError  # replaced per instance in __init__

    def submit_many(
        self,
        items: Iterable[Any],
        priority: bool = False,
        *,
        on_done: Callable[[Completion], object] | None = None,
    ) -> int:
        """Admit the longest prefix of ``items`` that fits; return its length. Never blocks.

        With ``on_done``, ``on_done(completion)`` is called once every admitted item of this
        call is processed or dead-lettered (at once if none was admitted). Submissions
        without it pay nothing for tracking.
        """
        raise NotImplementedError  # replaced per instance in __init__

    def submit_tracked(self, items: Iterable[Any], priority: bool = False) -> Completion:
        """Like ``submit_many``, returning a :class:`Completion` handle to wait on."""
        self._life.refuse_if_forked()
        batch = items if isinstance(items, list) else list(items)
        return submit_tracked(self._st, self._sched, batch, priority, self._completion_guard)

    def put(self, item: Any, priority: bool = False, timeout: float | None = None) -> None:
        """Admit ``item``, waiting for room if needed (without spinning).

        Raises ``Full`` when ``timeout`` seconds pass first and ``Closed`` once shutdown has
        begun.
        """
        if self.submit(item, priority):
            return
        self._not_on_loop("put", "await p.aput(...)")
        st = self._st
        wait_for = check_seconds("timeout", timeout, allow_none=True)
        deadline = None if wait_for is None else st.now() + wait_for
        sched = self._sched
        while True:
            if st.closed:
                raise Closed("the pipeline is shutting down")
            waiter = Waiter()
            sched.add_waiter(sched.room_waiters, waiter)
            try:
                if self.submit(item, priority):
                    return
                if st.closed:
                    raise Closed("the pipeline is shutting down")
                remaining = None if deadline is None else deadline - st.now()
                if remaining is not None and remaining <= 0:
                    raise Full("priority" if priority else "regular", wait_for or 0.0)
                self._clock.wait(waiter.lock, remaining)
            finally:
                sched.remove_waiter(sched.room_waiters, waiter)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the worker threads. Items submitted before are queued, not lost."""
        if self._life.start():
            watch(self, self._life)  # dropped without shutdown, exit, fork: see _orphans
        return self

    def flush(self) -> None:
        """Hand every partial batch to the handler now, without waiting for ``max_delay``."""
        self._sched.ask_flush()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every item accepted so far has an outcome; False on timeout.

        Partial batches still wait for ``max_delay`` (or call ``flush()`` first). Raises
        ``SluicewayError`` on the event loop that runs the async handlers.
        """
        self._not_on_loop("wait_idle", "await loop.run_in_executor(None, p.wait_idle)")
        self._life.refuse_if_forked()
        st = self._st
        target = st.accepted()
        wait_for = check_seconds("timeout", timeout, allow_none=True)
        deadline = None if wait_for is None else st.now() + wait_for
        return wait_finished(self._life, target, deadline)

    def shutdown(self, timeout: float | None = None) -> DrainReport:
        """Refuse new items at once, drain every accepted one, stop the threads.

        Items still unfinished after ``timeout`` seconds are dead-lettered with reason
        ``"shutdown-timeout"``. Safe to call more than once, and from several threads at
        once: each caller waits for at most its own ``timeout`` (plus the second it may
        take to stop the threads), and every caller returns the same report. Raises
        ``SluicewayError`` on one of the pipeline's own threads (inside a handler, an
        ``on_done`` callback or a dead-letter sink), where it would wait for itself.
        """
        wait_for = check_seconds("timeout", timeout, allow_none=True)
        if self._life.report is None:
            self._not_on_loop("shutdown", "await p.ashutdown(...) or async with")
        return self._life.shutdown(wait_for)

    def _not_on_loop(self, what: str, instead: str) -> None:
        if self._uses_loop:
            refuse_on_loop(self._host, what, instead)

    async def aput(self, item: Any, priority: bool = False, timeout: float | None = None) -> None:
        """Admit ``item``, waiting for room without blocking the event loop.

        Raises ``Full`` after ``timeout`` seconds (loop time) and ``Closed`` once shutdown
        has begun.
        """
        import asyncio  # noqa: PLC0415 - asyncio loads only for pipelines used from a loop

        if self.submit(item, priority):
            return
        st = self._st
        wait_for = check_seconds("timeout", timeout, allow_none=True)
        loop = asyncio.get_running_loop()
        deadline = None if wait_for is None else loop.time() + wait_for
        sched = self._sched
        while True:
            if st.closed:
                raise Closed("the pipeline is shutting down")
            waiter = AsyncWaiter(loop)
            sched.add_waiter(sched.room_waiters, waiter)
            try:
                if self.submit(item, priority):
                    return
                if st.closed:
                    raise Closed("the pipeline is shutting down")
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise Full("priority" if priority else "regular", wait_for or 0.0)
                try:
                    await asyncio.wait_for(waiter.future, remaining)
                except TimeoutError:
                    pass
            finally:
                sched.remove_waiter(sched.room_waiters, waiter)

    async def ashutdown(self, timeout: float | None = None) -> DrainReport:
        """``shutdown`` without blocking the event loop (async handlers keep running)."""
        import asyncio  # noqa: PLC0415 - asyncio loads only for pipelines used from a loop

        if self._life.report is not None:
            return self._life.report
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._shutdown_off_loop, timeout)

    def _shutdown_off_loop(self, timeout: float | None) -> DrainReport:
        return self.shutdown(timeout)

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown(self._drain_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(self._drain_timeout)

    # -- introspection -----------------------------------------------------------------------
    def __repr__(self) -> str:
        cfg = self._cfg
        state = "closed" if self._st.closed else "running" if self._life.started else "new"
        return (
            f"<Pipeline {state} shards={cfg.shards} capacity={cfg.capacity} "
            f"batch_size={cfg.batch_size} keyed={cfg.key is not None} "
            f"in_flight={self._st.in_flight() + self._st.ptokens.out()}>"
        )

    @property
    def dead_letters(self) -> MemoryDeadLetters:
        """The in-memory dead letters (only when no ``dead_letter`` sink was given)."""
        if self._memory is None:
            raise AttributeError("dead_letters: this pipeline sends them to its dead_letter sink")
        return self._memory

    def undelivered_dead_letters(self) -> list[DeadLetter]:
        """Dead letters the ``dead_letter`` sink kept refusing, held in memory meanwhile."""
        return self._sink.undelivered()

    def histograms(self) -> dict[str, HistogramSnapshot]:
        """Latency and duration histograms (seconds), for the Prometheus collector.

        ``priority_latency``: submit to priority handler start. ``batch_duration``: handler
        calls (one in four is timed). ``end_to_end``: regular items, from when their
        batch's oldest item was first seen to the batch's handler call returning (each item
        counted at its batch's oldest age: an upper bound).
        """
        st = self._st
        return {
            "priority_latency": st.h_priority.snapshot(),
            "batch_duration": st.h_batch.snapshot(),
            "end_to_end": st.h_e2e.snapshot(),
        }

    def add_dead_letter_listener(self, listener: Callable[[list[DeadLetter]], object]) -> None:
        """Also tell ``listener`` about every dead letter (after the sink; errors are logged).

        Integrations use it: the NATS worker forwards dead letters to a dead-letter stream.
        """
        self._sink.listeners.append(listener)

    def dead_lettered_by_reason(self) -> dict[str, int]:
        """Items dead-lettered so far, by reason."""
        return self._outcomes.counts()[2]

    @property
    def closed(self) -> bool:
        """True once shutdown has begun."""
        return self._st.closed

    @property
    def accepting(self) -> bool:
        """True while regular items can be admitted (what ``/readyz`` reports).

        False once shutdown has begun, and while every breaker is open.
        """
        return not self._st.closed and not self._sched.suspended

    def stats(self) -> Stats:
        """A frozen snapshot of the counters (cheap; nothing is counted per item)."""
        st = self._st
        cfg = self._cfg
        sched = self._sched
        now = st.now()
        # Tokens out first: a consistent count of items without an outcome (<= capacity).
        prio_in_flight = st.ptokens.out()
        in_flight = st.in_flight() + prio_in_flight
        done, dead, _ = self._outcomes.counts()
        sizes = st.batch_sizes
        shards = tuple(
            ShardStats(
                s.index,
                s.backlog() + s.retrying(),
                st.shard_capacity[s.index],
                done[s.index],
                dead[s.index],
                s.batches,
                sched.busy(s.index),
                sched.breaker_state(s.index, now),
                sizes[s.index],
                s.steals_out,
                s.moved_out,
                s.steals_in,
                s.moved_in,
            )
            for s in st.shards
        )
        flushes = [0, 0, 0, 0]
        for s in st.shards:
            flushes = [a + b for a, b in zip(flushes, s.flushes, strict=True)]
        prio_accepted = st.ptokens.granted()
        accepted = sum(p.granted() for p in st.pools()) + prio_accepted
        p50, p99 = _percentiles(list(st.latencies))
        emas = [s.batch_ema for s in st.shards if s.batch_ema > 0]
        return Stats(
            accepted=accepted,
            refused=st.refused + st.prio_refused,
            processed=sum(done),
            dead_lettered=sum(dead),
            in_flight=in_flight,
            priority_accepted=prio_accepted,
            priority_refused=st.prio_refused,
            priority_depth=len(st.pq),
            priority_capacity=cfg.priority_capacity,
            capacity=cfg.capacity,
            batch_size=round(sum(sizes) / len(sizes)),
            batch_time_ema=sum(emas) / len(emas) if emas else 0.0,
            flushes=Stats.flush_map(flushes),
            priority_latency_p50=p50,
            priority_latency_p99=p99,
            shards=shards,
            closed=st.closed,
            retries=self._settle.retries,
            batch_size_changes=self._balancer.changes,
            dead_letters_undelivered=len(self._sink.undelivered()) + self._sink.overflow,
            priority_in_flight=prio_in_flight,
        )


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    values.sort()
    last = len(values) - 1
    return values[round(0.5 * last)], values[round(0.99 * last)]
