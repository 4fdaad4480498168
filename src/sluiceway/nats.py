"""Scale-out over NATS JetStream (``pip install 'sluiceway[nats]'``).

Many sluiceway workers share one durable stream. Events travel in *envelopes* (a JSON
object ``{"id": ..., "events": [...]}``, up to ``batch_size`` events a message) because one
JetStream message per event tops out at tens of thousands a second per process.

- :class:`Publisher` batches events into envelopes by size and time (the same dual trigger
  as a shard), publishes asynchronously and awaits the server's acks in bulk; priority
  events go to their own subject at once.
- :class:`Worker` pull-consumes envelopes (priority subject first), submits their events to
  a local :class:`sluiceway.Pipeline`, and acks an envelope only when every one of its
  events is processed or dead-lettered. While the pipeline refuses, it stops fetching, so
  backpressure reaches the broker (``max_ack_pending``), not memory. Long envelopes get
  ``in_progress()``; envelopes it cannot take are ``nak(delay)``-ed; dead-lettered events are
  also published to the dead-letter stream, and envelopes that exhaust ``max_deliver`` are
  moved there by listening to the server's advisory.

Delivery across the broker is **at-least-once**: an envelope whose worker dies before its
ack is redelivered, so its events may be handled twice. Every event carries a stable
``id`` (the publisher adds ``"<envelope>-<n>"`` if it has none): make handlers idempotent on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

try:
    import nats
    import orjson
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
    from nats.js.errors import NotFoundError
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("sluiceway.nats needs: pip install 'sluiceway[nats]'") from exc

from ._core._completion import Completion
from ._core._pipeline import Pipeline
from ._factory import load_factory
from ._records import DeadLetter

__all__ = ["Publisher", "Worker", "ensure_streams"]


def _subjects(subject: str) -> tuple[str, str, str]:
    return subject, f"{subject}.priority", f"{subject}.dead"


async def ensure_streams(js: Any, stream: str, subject: str) -> None:
    """Create the work-queue stream and its dead-letter stream if they do not exist."""
    regular, priority, dead = _subjects(subject)
    for name, subjects, retention in (
        (stream, [regular, priority], RetentionPolicy.WORK_QUEUE),
        (f"{stream}_DEAD", [dead], RetentionPolicy.LIMITS),
    ):
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(StreamConfig(name=name, subjects=subjects, retention=retention))


class Publisher:
    """Batches events into envelopes and publishes them to a stream."""

    def __init__(
        self,
        nc_or_url: NATS | str,
        *,
        stream: str = "SLUICEWAY",
        subject: str = "sluiceway.events",
        batch_size: int = 1000,
        max_delay: float = 0.005,
        create_stream: bool = False,
        max_pending_acks: int = 64,
    ) -> None:
        self._nc_or_url = nc_or_url
        self.stream = stream
        self.subject, self.priority_subject, _ = _subjects(subject)
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.create_stream = create_stream
        self.max_pending_acks = max_pending_acks
        self._buffer: list[Any] = []
        self._acks: list[asyncio.Future[Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._own = isinstance(nc_or_url, str)
        self.nc: NATS | None = None
        self.js: Any = None
        self.envelopes = 0
        self.events = 0

    async def start(self) -> Publisher:
        """Connect (if given a URL) and create the streams if asked."""
        if isinstance(self._nc_or_url, str):
            self.nc = await nats.connect(self._nc_or_url)
        else:
            self.nc = self._nc_or_url
        self.js = self.nc.jetstream()
        if self.create_stream:
            await ensure_streams(self.js, self.stream, self.subject)
        return self

    async def __aenter__(self) -> Publisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def publish(self, event: Any, priority: bool = False) -> None:
        """Queue ``event`` (a JSON-able dict); priority events are sent at once, alone."""
        if priority:
            await self._send(self.priority_subject, [event])
            return
        self._buffer.append(event)
        if len(self._buffer) >= self.batch_size:
            await self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(
                self.max_delay, lambda: asyncio.ensure_future(self.flush())
            )

    def _flush_soon(self) -> None:
        self._timer = None
        self._tasks.add(task := asyncio.ensure_future(self.flush()))
        task.add_done_callback(self._tasks.discard)

    async def publish_many(self, events: list[Any], priority: bool = False) -> None:
        """Queue many events."""
        for event in events:
            await self.publish(event, priority)

    async def flush(self) -> None:
        """Send the buffered events as one envelope now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buffer:
            batch, self._buffer = self._buffer, []
            await self._send(self.subject, batch)

    async def _send(self, subject: str, events: list[Any]) -> None:
        envelope_id = uuid.uuid4().hex
        for n, event in enumerate(events):
            if isinstance(event, dict) and "id" not in event:
                event["id"] = f"{envelope_id}-{n}"
        payload = orjson.dumps({"id": envelope_id, "events": events})
        self._acks.append(await self.js.publish_async(subject, payload))
        self.envelopes += 1
        self.events += len(events)
        if len(self._acks) >= self.max_pending_acks:
            await self._await_acks()

    async def _await_acks(self) -> None:
        acks, self._acks = self._acks, []
        await asyncio.gather(*acks)  # raises if the server refused any

    async def close(self) -> None:
        """Flush, wait for every ack, and disconnect if this publisher connected."""
        await self.flush()
        await self._await_acks()
        if self._own and self.nc is not None:
            await self.nc.drain()


def _parse_envelope(data: bytes) -> tuple[str, list[Any]] | str:
    """``(id, events)`` of a well-formed envelope, or what is wrong with it."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(body, dict):
        return f"the body is a JSON {type(body).__name__}, not an object"
    events = body.get("events")
    if not isinstance(events, list):
        return f"'events' is {type(events).__name__}, not a list"
    return str(body.get("id")), events


def _text(data: bytes) -> str:
    """The raw body as text; bytes that are not UTF-8 as backslash escapes."""
    return data.decode("utf-8", "backslashreplace")


class _Envelope:
    __slots__ = ("completions", "dead", "msg", "received", "remaining", "total")

    def __init__(self, msg: Msg, total: int) -> None:
        self.msg = msg
        self.total = total
        self.remaining = total  # events without an outcome yet
        self.dead = 0
        self.received = time.monotonic()
        self.completions = 0


class Worker:
    """Feeds a local pipeline from a shared durable consumer; acks when events are done."""

    def __init__(
        self,
        pipeline: Pipeline,
        url: str,
        *,
        stream: str = "SLUICEWAY",
        subject: str = "sluiceway.events",
        durable: str = "sluiceway",
        fetch_batch: int = 8,
        ack_wait: float = 30.0,
        max_deliver: int = 5,
        max_ack_pending: int = 64,
        nak_delay: float = 1.0,
        create_stream: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.url = url
        self.stream = stream
        self.subject, self.priority_subject, self.dead_subject = _subjects(subject)
        self.durable = durable
        self.fetch_batch = fetch_batch
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.nak_delay = nak_delay
        self.create_stream = create_stream
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()
        self._inflight: dict[str, _Envelope] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.nc: NATS | None = None
        self.js: Any = None
        self.fetched = self.acked = self.naked = self.redelivered = self.moved_dead = 0
        self.malformed = 0
        self.lag = 0
        pipeline.add_dead_letter_listener(self._forward_dead)
        self._dead_out: list[bytes] = []
        self._dead_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop fetching; ``run`` then drains the pipeline, acks, and returns."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> None:
        """Consume until ``stop()`` (or SIGTERM/SIGINT when run by ``sluiceway worker``)."""
        self._loop = asyncio.get_running_loop()
        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        self.js = self.nc.jetstream()
        if self.create_stream:
            await ensure_streams(self.js, self.stream, self.subject)
        subs = []
        for subject, name in ((self.priority_subject, f"{self.durable}-priority"),
                              (self.subject, self.durable)):  # fmt: skip
            config = ConsumerConfig(
                durable_name=name,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=self.max_deliver,
                max_ack_pending=self.max_ack_pending,
                filter_subject=subject,
            )
            subs.append(
                await self.js.pull_subscribe(
                    subject, durable=name, stream=self.stream, config=config
                )
            )
        prio, regular = subs
        advisory = await self.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*", cb=self._max_delivered
        )
        self.pipeline.start()
        keeper = asyncio.create_task(self._keep_alive())
        try:
            while not self._stop.is_set():
                if self._pipeline_full():
                    await asyncio.sleep(0.002)  # backpressure: fetch nothing until room
                    continue
                msgs = await self._fetch(prio, 0.001) or await self._fetch(regular, 0.25)
                for msg in msgs:
                    await self._take(msg)
                await self._flush_dead()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.pipeline.ashutdown()
            await asyncio.sleep(0)  # let the last acks scheduled by completions run
            await self._flush_dead()
            await advisory.unsubscribe()
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            # Pending pull requests make drain() wait for its timeout: flush the acks, close.
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=5)
            await self.nc.close()

    def _pipeline_full(self) -> bool:
        s = self.pipeline.stats()
        return s.in_flight >= s.capacity * 0.9 or len(self._inflight) >= self.max_ack_pending

    async def _fetch(self, sub: Any, timeout: float) -> list[Msg]:
        try:
            msgs: list[Msg] = await sub.fetch(self.fetch_batch, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        self.fetched += len(msgs)
        return msgs

    # -- one envelope ---------------------------------------------------------------------
    async def _take(self, msg: Msg) -> None:
        if msg.metadata.num_delivered > 1:
            self.redelivered += 1
        parsed = _parse_envelope(msg.data)
        if isinstance(parsed, str):  # malformed: dead-letter it alone, ack it, go on
            await self._publish_dead(msg.data, "malformed-envelope", parsed)
            await msg.ack()
            self.malformed += 1
            return
        envelope_id, events = parsed
        key = f"{envelope_id}:{msg.metadata.sequence.stream}"
        priority = msg.subject == self.priority_subject
        env = _Envelope(msg, len(events))
        self._inflight[key] = env
        if not events:
            await self._finish(key)
            return
        left = events
        while left:
            completion = self.pipeline.submit_tracked(left, priority)
            k = completion.accepted
            if k:
                env.completions += 1
                completion.add_done_callback(functools.partial(self._settled, key))
            left = left[k:]
            if left:
                if self.pipeline.closed:
                    env.remaining -= len(left)  # never admitted: the envelope goes back
                    env.total = -1
                    break
                await asyncio.sleep(0.001)  # the pipeline is full: wait, fetch nothing more

    def _settled(self, key: str, c: Completion) -> None:
        """A completion fired (on an engine thread): count it on the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._count, key, c.accepted, c.dead_lettered)

    def _count(self, key: str, done: int, dead: int) -> None:
        env = self._inflight.get(key)
        if env is None:
            return
        env.remaining -= done
        env.dead += dead
        if env.remaining <= 0:
            task = asyncio.ensure_future(self._finish(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, key: str) -> None:
        env = self._inflight.pop(key, None)
        if env is None:
            return
        if env.total < 0:  # partly refused at shutdown: someone else must take it
            await env.msg.nak(delay=self.nak_delay)
            self.naked += 1
            return
        if env.dead:
            # Its dead letters reach the dead-letter stream before the envelope is acked: a
            # crash in between redelivers the envelope rather than losing the records.
            await self._flush_dead()
        await env.msg.ack()
        self.acked += 1

    async def _keep_alive(self) -> None:
        """Tell the server that long envelopes are still being worked on."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            now = time.monotonic()
            for env in list(self._inflight.values()):
                if now - env.received > self.ack_wait / 3:
                    with contextlib.suppress(Exception):
                        await env.msg.in_progress()
            with contextlib.suppress(Exception):
                info = await self.js.consumer_info(self.stream, self.durable)
                self.lag = info.num_pending + info.num_ack_pending

    # -- dead letters ---------------------------------------------------------------------
    def _forward_dead(self, records: list[DeadLetter]) -> None:
        """Pipeline listener (engine thread): queue dead events for the dead-letter stream."""
        payload = orjson.dumps(
            {
                "reason": records[0].reason if records else None,
                "events": [r.item for r in records],
                "errors": [r.error_message for r in records],
            },
            default=repr,
        )
        self._dead_out.append(payload)

    async def _flush_dead(self) -> None:
        async with self._dead_lock:  # one publisher at a time, so none is sent twice
            while self._dead_out:
                await self.js.publish(self.dead_subject, self._dead_out[0])
                self._dead_out.pop(0)  # only once the server has stored it

    async def _publish_dead(self, data: bytes, reason: str, error: str | None = None) -> None:
        record = {"reason": reason, "error": error, "envelope": _text(data)}
        await self.js.publish(self.dead_subject, orjson.dumps(record))

    async def _max_delivered(self, msg: Msg) -> None:
        """An envelope hit max_deliver: move it to the dead-letter stream, off the queue."""
        try:
            info = orjson.loads(msg.data)
            seq = int(info["stream_seq"])
            stored = await self.js.get_msg(self.stream, seq)
        except Exception:  # noqa: BLE001 - another worker may have moved it already
            return
        await self._publish_dead(stored.data or b"", "max-deliver")
        with contextlib.suppress(Exception):
            await self.js.delete_msg(self.stream, seq)
            self.moved_dead += 1

    def metrics(self) -> Iterator[Any]:
        """Metric families for ``sluiceway.prometheus.add_source``."""
        for name, value, doc in (
            ("sluiceway_nats_envelopes_fetched", self.fetched, "Envelopes fetched."),
            ("sluiceway_nats_envelopes_acked", self.acked, "Envelopes acked."),
            ("sluiceway_nats_envelopes_naked", self.naked, "Envelopes nak'd."),
            ("sluiceway_nats_envelopes_redelivered", self.redelivered, "Redeliveries seen."),
            ("sluiceway_nats_envelopes_dead", self.moved_dead, "Envelopes moved to dead."),
        ):
            c = CounterMetricFamily(name, doc, labels=["durable"])
            c.add_metric([self.durable], value)
            yield c
        g = GaugeMetricFamily(
            "sluiceway_nats_consumer_lag", "Pending plus unacked.", labels=["durable"]
        )
        g.add_metric([self.durable], self.lag)
        yield g


def run_worker(
    factory: str,
    url: str,
    *,
    stream: str,
    subject: str,
    durable: str,
    ack_wait: float = 30.0,
    max_deliver: int = 5,
    metrics_port: int | None = None,
) -> int:
    """``sluiceway worker``: run until SIGTERM/SIGINT, then drain, ack and exit."""
    pipeline = load_factory(factory)()
    worker = Worker(
        pipeline,
        url,
        stream=stream,
        subject=subject,
        durable=durable,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )

    server = None
    if metrics_port is not None:
        from . import prometheus as swp  # noqa: PLC0415 - only when metrics are asked for

        swp.register(pipeline, name=durable)
        swp.add_source(worker.metrics)
        server = swp.serve(port=metrics_port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0


def worker_command(args: Any) -> int:
    """``sluiceway worker`` with parsed arguments."""
    return run_worker(
        args.factory,
        args.nats,
        stream=args.stream,
        subject=args.subject,
        durable=args.durable,
        ack_wait=args.ack_wait,
        max_deliver=args.max_deliver,
        metrics_port=args.metrics_port,
    )
