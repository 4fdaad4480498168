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

Errors, all in the ``sw.SluicewayError`` tree::

    PublishError                          events the publisher could not store (.events)
     ├── EventNotEncodable (TypeError)    publish(): an event orjson cannot encode
     └── EventTooLarge (ValueError)       publish(): one event exceeds the max payload
    ConnectError (ConnectionError)        Worker: no server at start-up, or an unknown host
    ConfigError (ValueError)              Worker: a URL that is not a NATS URL

This module holds the worker and ``sluiceway worker``; the publisher lives in
``_nats_publisher`` and the wire formats (envelopes, dead-letter records) in ``_nats_wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

try:
    import nats
    import orjson
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.api import AckPolicy, ConsumerConfig
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"sluiceway.nats needs {exc.name!r}: pip install 'sluiceway[nats]'") from exc

from ._core._completion import Completion
from ._core._pipeline import Pipeline
from ._errors import ConfigError, InvalidItem, SluicewayError
from ._factory import FactoryError, build_pipeline, load_factory
from ._logging import say
from ._nats_publisher import EventNotEncodable, EventTooLarge, Publisher, PublishError
from ._nats_wire import (
    dead_messages,
    ensure_streams,
    envelope_messages,
    parse_envelope,
    subjects,
)
from ._records import DeadLetter

__all__ = [
    "METRICS",
    "ConnectError",
    "EventNotEncodable",
    "EventTooLarge",
    "PublishError",
    "Publisher",
    "Worker",
    "check_servers",
    "ensure_streams",
]


# name: (type, labels, help), as sluiceway.prometheus.METRICS; docs/metrics.md lists both.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sluiceway_nats_envelopes_fetched": (
        "counter",
        ("pipeline", "durable"),
        "Envelopes fetched from the stream.",
    ),
    "sluiceway_nats_envelopes_acked": (
        "counter",
        ("pipeline", "durable"),
        "Envelopes acked (every event processed or dead-lettered; malformed ones too).",
    ),
    "sluiceway_nats_envelopes_naked": (
        "counter",
        ("pipeline", "durable"),
        "Envelopes nak'd for another worker (refused at shutdown).",
    ),
    "sluiceway_nats_envelopes_redelivered": (
        "counter",
        ("pipeline", "durable"),
        "Envelopes fetched again after an earlier delivery.",
    ),
    "sluiceway_nats_envelopes_dead": (
        "counter",
        ("pipeline", "durable"),
        "Envelopes past max_deliver moved to the dead-letter stream by this worker.",
    ),
    "sluiceway_nats_envelopes_malformed": (
        "counter",
        ("pipeline", "durable"),
        "Malformed envelopes dead-lettered and acked.",
    ),
    "sluiceway_nats_consumer_lag": (
        "gauge",
        ("pipeline", "durable"),
        "Envelopes pending plus unacked on the durable consumer.",
    ),
    "sluiceway_nats_connected": (
        "gauge",
        ("pipeline", "durable"),
        "1 while connected to a NATS server, else 0.",
    ),
}


class ConnectError(SluicewayError, ConnectionError):
    """The worker could not reach a NATS server at start-up (or its host does not resolve)."""


class _Stopped(Exception):
    """``stop()`` was called before a connection was made."""


log = logging.getLogger("sluiceway.nats")

_SCHEMES = ("nats", "tls", "ws", "wss")
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    nats.errors.UnexpectedEOF,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
)


def check_servers(url: str) -> list[str]:
    """The server URLs in ``url`` (comma-separated); ``sw.ConfigError`` if one is not NATS's.

    A URL without a scheme gets ``nats://``, as nats-py does.
    """
    servers = []
    for part in (p.strip() for p in url.split(",")):
        server = part if "://" in part else f"nats://{part}"
        try:
            parts = urllib.parse.urlsplit(server)
        except ValueError as exc:  # "Invalid IPv6 URL"
            raise ConfigError("url", f"{part!r} is not a URL ({exc})") from None
        shown = _redact(server)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(
                "url",
                f"{shown}: the scheme must be nats://, tls://, ws:// or wss:// "
                f"(not {parts.scheme}://)",
            )
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number in range
        except ValueError as exc:
            raise ConfigError("url", f"{shown}: the port is not a number in 0-65535") from exc
        if not parts.hostname:
            raise ConfigError("url", f"{shown}: no host")
        servers.append(server)
    return servers


def _redact(url: str) -> str:
    """``url`` with any user, password or token replaced by ``***``."""
    out = []
    for part in url.split(","):
        parts = urllib.parse.urlsplit(part.strip())
        if "@" in parts.netloc:
            parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
        out.append(urllib.parse.urlunsplit(parts))
    return ",".join(out)


def _describe(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
        connect_timeout: float = 10.0,
        close_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.name = durable if name is None else name  # the ``pipeline`` label of metrics
        self.url = url
        self.stream = stream
        self.subject, self.priority_subject, self.dead_subject = subjects(subject)
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
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._state = "new"  # new, connecting, connected, disconnected, closing, closed
        self._ready = asyncio.Event()  # set once consuming
        self._task: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        self._trouble_logged: str | None = None

    def __repr__(self) -> str:
        return (
            f"Worker(url={self._where()!r}, stream={self.stream!r}, durable={self.durable!r}, "
            f"name={self.name!r}, state={self._state!r}, acked={self.acked})"
        )

    @property
    def state(self) -> str:
        """``new``, ``connecting``, ``connected``, ``disconnected``, ``closing`` or ``closed``."""
        return self._state

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Worker:
        """Run in a background task; return once consuming (raise if it could not start)."""
        self._task = asyncio.create_task(self.run())
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # raises what stopped it
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop, drain the pipeline, ack, disconnect."""
        self.stop()
        if self._task is not None:
            await self._task

    def stop(self) -> None:
        """Stop connecting or fetching; ``run`` then drains the pipeline, acks, and returns."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        else:
            self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop()`` (or SIGTERM/SIGINT when run by ``sluiceway worker``).

        Raises ``sw.ConfigError`` at once for a URL that is not a NATS URL and
        :class:`ConnectError` for a host that does not resolve or no server answering within
        ``connect_timeout``. Once connected, it rides out disconnections (reconnecting for
        ever, logging each change of state once); ``stop()`` ends it in any state.
        """
        self._loop = asyncio.get_running_loop()
        try:
            self.nc = await self._connect()
        except _Stopped:
            self._state = "closed"
            log.info("stopped before a connection was made")
            return
        except BaseException:
            self._state = "closed"
            raise
        try:
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
            # One queue group for all workers of the stream: the server hands each advisory
            # to one of them, so one worker moves the envelope (a Nats-Msg-Id dedupes a repeat).
            advisory = await self.nc.subscribe(
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*",
                queue=f"sluiceway-{self.stream}-max-deliver",
                cb=self._max_delivered,
            )
        except BaseException:
            self._state = "closing"
            with contextlib.suppress(Exception):
                await self.nc.close()
            self._state = "closed"
            raise
        prio, regular = subs
        log.info(
            "consuming stream %s, subject %s (durable %s) from %s",
            self.stream,
            self.subject,
            self.durable,
            self._where(),
            extra={
                "url": self._where(),
                "stream": self.stream,
                "subject": self.subject,
                "priority_subject": self.priority_subject,
                "durable": self.durable,
            },
        )
        self.pipeline.start()
        self._ready.set()
        keeper = asyncio.create_task(self._keep_alive())
        try:
            while not self._stop.is_set():
                try:
                    if self._pipeline_full():
                        await asyncio.sleep(0.002)  # backpressure: fetch nothing until room
                        continue
                    msgs = await self._fetch(prio, 0.001) or await self._fetch(regular, 0.25)
                    for msg in msgs:
                        try:
                            await self._take(msg)
                        except Exception as exc:  # noqa: BLE001 - not acked: redelivered later
                            self._trouble(exc)
                    await self._flush_dead()
                except Exception as exc:  # noqa: BLE001 - the connection is down: wait, retry
                    self._trouble(exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 0.5)
        finally:
            in_flight = self.pipeline.stats().in_flight
            log.info(
                "stopping: draining the pipeline (%d events in flight)",
                in_flight,
                extra={"in_flight": in_flight, "durable": self.durable},
            )
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.pipeline.ashutdown()
            await asyncio.sleep(0)  # let the last acks scheduled by completions run
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.close_timeout)
            try:
                await asyncio.wait_for(self._flush_dead(), self.close_timeout)
            except Exception as exc:  # noqa: BLE001 - their envelopes are redelivered
                log.warning(
                    "%d dead-letter message(s) could not be stored (%s); their envelopes "
                    "were not acked and will be redelivered",
                    len(self._dead_out),
                    _describe(exc),
                )
            for sub in (advisory, *subs):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.unsubscribe(), 2)
            # Pending pull requests make drain() wait for its timeout: flush the acks, close.
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=5 if self._state == "connected" else 1)
            self._state = "closing"
            with contextlib.suppress(Exception):  # a lost connection has nothing to flush
                await self.nc.close()
            self._state = "closed"
            stats = self.pipeline.stats()
            log.info(
                "stopped: %d envelope(s) acked, %d nak'd, %d malformed; %d events processed, "
                "%d dead-lettered",
                self.acked,
                self.naked,
                self.malformed,
                stats.processed,
                stats.dead_lettered,
                extra={
                    "acked": self.acked,
                    "naked": self.naked,
                    "malformed": self.malformed,
                    "processed": stats.processed,
                    "dead_lettered": stats.dead_lettered,
                    "durable": self.durable,
                },
            )

    async def _connect(self) -> NATS:
        """Connect, retrying for up to ``connect_timeout`` s; a bad URL fails at once."""
        servers = check_servers(self.url)
        loop = asyncio.get_running_loop()
        for server in servers:
            parts = urllib.parse.urlsplit(server)
            try:
                await loop.getaddrinfo(parts.hostname, parts.port or 4222)
            except OSError as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ConnectError(f"cannot resolve host {parts.hostname!r} ({reason})") from exc
        nc = NATS()
        self._state = "connecting"
        log.info("connecting to %s", self._where(), extra={"url": self._where()})
        connecting = asyncio.ensure_future(
            nc.connect(
                servers,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=max(1, min(2, round(self.connect_timeout))),
            )
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait(
            {connecting, stopping},
            timeout=self.connect_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopping.cancel()
        if connecting in done:
            connecting.result()
            self._state = "connected"
            return nc
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        self._state = "closing"
        with contextlib.suppress(Exception):
            await nc.close()
        if stopping in done:
            raise _Stopped
        last = f": {_describe(self._last_error)}" if self._last_error else ""
        raise ConnectError(
            f"cannot connect to {self._where()} within {self.connect_timeout:g}s{last}"
        )

    def _where(self) -> str:
        return _redact(self.url)

    # -- connection state: one log line per change, never one per attempt -----------------
    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if self._state == "connected" and not isinstance(exc, _CONNECTION_ERRORS):
            log.warning("NATS error: %s", _describe(exc))

    async def _on_disconnected(self) -> None:
        if self._state == "connected":
            self._state = "disconnected"
            last = f" ({_describe(self._last_error)})" if self._last_error else ""
            log.warning("disconnected from %s%s; reconnecting", self._where(), last)

    async def _on_reconnected(self) -> None:
        if self._state == "disconnected":
            log.warning("reconnected to %s", self._where())
        self._state = "connected"
        self._trouble_logged = None

    def _trouble(self, exc: BaseException) -> None:
        """A step of the loop failed: log it once (not at all while disconnected)."""
        text = _describe(exc)
        if self._state == "connected" and text != self._trouble_logged:
            log.warning("NATS operation failed (%s); retrying", text)
            self._trouble_logged = text

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
        parsed = parse_envelope(msg.data)
        if isinstance(parsed, str):  # malformed: dead-letter it alone, ack it, go on
            await self._publish_dead(msg.data, "malformed-envelope", parsed)
            await msg.ack()
            self.acked += 1
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
            try:
                completion = self.pipeline.submit_tracked(left, priority)
            except InvalidItem as exc:  # nothing of the call admitted: drop that event, retry
                self._dead_out.extend(
                    dead_messages("invalid-item", [(exc.item, str(exc))], self._dead_limit())
                )
                env.dead += 1
                env.remaining -= 1
                left = left[: exc.index] + left[exc.index + 1 :]
                continue
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
        if env.remaining <= 0:  # the last events were invalid: no completion will finish it
            await self._finish(key)

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
        try:
            if env.total < 0:  # partly refused at shutdown: someone else must take it
                await env.msg.nak(delay=self.nak_delay)
                self.naked += 1
                return
            if env.dead:
                # Its dead letters reach the dead-letter stream before the envelope is acked:
                # a crash in between redelivers the envelope rather than losing the records.
                await self._flush_dead()
            await env.msg.ack()
        except Exception as exc:  # noqa: BLE001 - not acked: redelivered after AckWait
            self._trouble(exc)
            return
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
        limit = self._dead_limit()
        by_reason: dict[str, list[DeadLetter]] = {}
        for r in records:
            by_reason.setdefault(r.reason, []).append(r)
        for reason, group in by_reason.items():
            items = [(r.item, r.error_message) for r in group]
            self._dead_out.extend(dead_messages(reason, items, limit))

    def _dead_limit(self) -> int:
        """The largest dead-letter message the server takes."""
        return self.nc.max_payload if self.nc is not None else 1 << 20

    async def _flush_dead(self) -> None:
        async with self._dead_lock:  # one publisher at a time, so none is sent twice
            while self._dead_out:
                await self.js.publish(self.dead_subject, self._dead_out[0])
                self._dead_out.pop(0)  # only once the server has stored it

    async def _publish_dead(
        self, data: bytes, reason: str, error: str | None = None, msg_id: str | None = None
    ) -> None:
        """Store a whole envelope's body in the dead-letter stream (see envelope_messages).

        With ``msg_id``, each message carries ``Nats-Msg-Id: <msg_id>:<n>``, so the stream's
        duplicate window keeps one copy if the same envelope is moved twice.
        """
        limit = self._dead_limit()
        if msg_id is not None:
            limit -= 256  # room for the header
        for n, payload in enumerate(envelope_messages(data, reason, error, limit)):
            headers = None if msg_id is None else {"Nats-Msg-Id": f"{msg_id}:{n}"}
            await self.js.publish(self.dead_subject, payload, headers=headers)

    async def _max_delivered(self, msg: Msg) -> None:
        """An envelope hit max_deliver: move it to the dead-letter stream, off the queue."""
        try:
            info = orjson.loads(msg.data)
            seq = int(info["stream_seq"])
            stored = await self.js.get_msg(self.stream, seq)
        except Exception:  # noqa: BLE001 - another worker may have moved it already
            return
        await self._publish_dead(
            stored.data or b"", "max-deliver", msg_id=f"max-deliver:{self.stream}:{seq}"
        )
        with contextlib.suppress(Exception):
            await self.js.delete_msg(self.stream, seq)
            self.moved_dead += 1

    def metrics(self) -> Iterator[Any]:
        """Metric families (:data:`METRICS`) for ``sluiceway.prometheus.add_source``."""
        values = {
            "sluiceway_nats_envelopes_fetched": self.fetched,
            "sluiceway_nats_envelopes_acked": self.acked,
            "sluiceway_nats_envelopes_naked": self.naked,
            "sluiceway_nats_envelopes_redelivered": self.redelivered,
            "sluiceway_nats_envelopes_dead": self.moved_dead,
            "sluiceway_nats_envelopes_malformed": self.malformed,
            "sluiceway_nats_consumer_lag": self.lag,
            "sluiceway_nats_connected": 1 if self._state == "connected" else 0,
        }
        for name, (kind, labels, doc) in METRICS.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            f = family(name, doc, labels=list(labels))
            f.add_metric([self.name, self.durable], values[name])
            yield f


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
    connect_timeout: float = 10.0,
) -> int:
    """``sluiceway worker``: run until SIGTERM/SIGINT, then drain, ack and exit.

    Returns 0 after a stop, 1 when no server could be reached at start-up, 2 for a bad URL;
    those failures print one line on stderr.
    """
    try:
        check_servers(url)
    except ConfigError as exc:
        return _fail(f"--nats {str(exc).removeprefix('url: ')}", 2)
    try:
        pipeline = build_pipeline(factory, load_factory(factory))
    except FactoryError as exc:
        return _fail(str(exc), 2)
    worker = Worker(
        pipeline,
        url,
        stream=stream,
        subject=subject,
        durable=durable,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        connect_timeout=connect_timeout,
    )

    server = None
    if metrics_port is not None:
        from . import prometheus as swp  # noqa: PLC0415 - only when metrics are asked for

        swp.register(pipeline, name=durable)
        swp.add_source(worker.metrics)
        server = swp.serve(port=metrics_port)
        metrics_url = f"http://127.0.0.1:{server.server_port}/metrics"
        log.info("serving metrics on %s", metrics_url, extra={"metrics_url": metrics_url})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    try:
        asyncio.run(main())
    except ConnectError as exc:
        return _fail(str(exc), 1)
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        return _fail(f"NATS refused the set-up: {_describe(exc)}", 1)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0


def _fail(message: str, code: int) -> int:
    say(log, logging.ERROR, f"sluiceway worker: {message}")
    return code


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
        connect_timeout=args.connect_timeout,
    )
