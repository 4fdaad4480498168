"""Durable ingest: the HTTP ingest protocol in front of a JetStream stream (``serve --nats``).

The app parses bodies exactly as :func:`sluiceway.http.ingest_app` does (the same
:class:`~sluiceway.http.Bodies` and :func:`~sluiceway.http.answer_once`), then publishes the
events in envelopes (the :mod:`sluiceway.nats` wire format) **one after the other**, each
awaiting JetStream's ack before the next is sent. It answers 202 only once every envelope of
the body is stored; at the first envelope the stream refuses (its limits reached, with
discard policy new) or does not acknowledge within ``ack_timeout``, it stops and answers 429
with ``Retry-After`` and ``{"accepted": k}``, k being the events of the stored envelopes:
a prefix, and nothing beyond it was sent.

Each envelope of a request with an ``Idempotency-Key`` carries ``Nats-Msg-Id:
<key>:<offset>`` (``offset``: the index of its first event in the send; a key
``<base>+<n>``, the clients' key for a refused suffix, counts from ``<base>``'s start; only
a canonical positive ``n``, ``[1-9][0-9]*``, is a suffix: ``k+0`` or ``k+01`` is a base of
its own, so two different keys never share an id), so
an envelope sent again within the stream's ``duplicate_window``, by a client resending after
a timeout or a suffix after a 429, is dropped by JetStream instead of stored twice. Events
that are objects without ``"id"`` get ``"<key>:<offset>-<n>"`` (or a random envelope id
without a key), so a resend keeps its ids too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._idempotency import Answer, IdempotencyStore, KeyStore
from ._nats_wire import ensure_streams, subjects
from .http import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_INFLIGHT_BYTES,
    OFF_LOOP_BYTES,
    Bodies,
    _json,
    answer_once,
    unauthorised,
)

__all__ = [
    "DurableIngest",
    "StreamLimits",
    "durable_ingest_app",
    "ensure_ingest_stream",
    "split_envelopes",
]

log = logging.getLogger("sluiceway.serve")

_SUFFIX = re.compile(r"^(.*)\+([1-9][0-9]*)$")  # only a canonical positive offset
_OVERHEAD = len(b'{"id":"","events":[]}')
_HEADER_ROOM = 512  # the Nats-Msg-Id header and the protocol line, within max_payload


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The stream's bounds: the ingest tier's capacity.

    ``None``: unlimited on a new stream, left as it is on an existing one. ``max_msgs``
    counts envelopes (up to ``envelope_events`` events each), ``max_bytes`` their bytes;
    ``duplicate_window`` is how long JetStream remembers a ``Nats-Msg-Id``.
    """

    max_msgs: int | None = None
    max_bytes: int | None = None
    duplicate_window: float = 120.0


async def ensure_ingest_stream(js: Any, stream: str, subject: str, limits: StreamLimits) -> None:
    """Create the work-queue stream with ``limits`` and discard policy new, or update it.

    The dead-letter stream beside it is created as :func:`sluiceway.nats.ensure_streams`
    does. An existing stream keeps its subjects and retention (and a limit given as None);
    the others are set.
    """
    check_subject(subject)
    regular, priority, _ = subjects(subject)
    window = limits.duplicate_window
    bounds: dict[str, Any] = {"discard": DiscardPolicy.NEW, "duplicate_window": window}
    if limits.max_msgs is not None:
        bounds["max_msgs"] = limits.max_msgs
    if limits.max_bytes is not None:
        bounds["max_bytes"] = limits.max_bytes
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        config = StreamConfig(
            name=stream,
            subjects=[regular, priority],
            retention=RetentionPolicy.WORK_QUEUE,
            **bounds,
        )
        await js.add_stream(config)
    else:
        current = info.config
        carried = list(current.subjects or [])
        missing = [s for s in (regular, priority) if not any(_covers(c, s) for c in carried)]
        if missing:
            raise ValueError(
                f"stream {stream} does not carry subject {' nor '.join(missing)} "
                f"(its subjects: {', '.join(carried) or 'none'}); use its subject or "
                "another --stream"
            )
        if any(getattr(current, k) != v for k, v in bounds.items()):
            for k, v in bounds.items():
                setattr(current, k, v)
            await js.update_stream(current)
    await ensure_streams(js, stream, subject)


def check_subject(subject: str) -> None:
    """ValueError unless ``subject`` is one a message can be published to (no wildcard)."""
    tokens = subject.split(".")
    if not subject or any(not t or t in ("*", ">") or any(c.isspace() for c in t) for t in tokens):
        raise ValueError(
            f"{subject!r} is not a subject to publish to (dot-separated non-empty tokens, "
            "no whitespace, no * or > wildcard)"
        )


def _covers(pattern: str, subject: str) -> bool:
    """True when the stream subject ``pattern`` (wildcards allowed) matches ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _base(key: str | None) -> tuple[str, int]:
    """The send's key and this request's offset in it (a client's ``<key>+<n>`` suffix)."""
    if key is None:
        return uuid.uuid4().hex, 0
    m = _SUFFIX.match(key)
    return (m.group(1), int(m.group(2))) if m else (key, 0)


class EventTooLarge(ValueError):
    """One event does not fit in an envelope within the server's max payload."""

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(
            f"event {index} alone makes a {size}-byte envelope; the server accepts {limit}"
        )
        self.index = index


def split_envelopes(
    events: list[Any], key: str | None, envelope_events: int, limit: int
) -> list[tuple[str, bytes, int]]:
    """``(envelope id, payload, number of events)`` for each envelope of ``events``, in order.

    Deterministic: the same events with the same key give the same envelopes, and a refused
    suffix resent as ``<key>+<k>`` (k: an envelope boundary) gives the same envelopes as
    the original's tail. :class:`EventTooLarge` if an event alone exceeds ``limit`` bytes.
    """
    base, offset = _base(key)
    out: list[tuple[str, bytes, int]] = []
    i, n = 0, len(events)
    while i < n:
        envelope_id = f"{base}:{offset + i}"
        size = _OVERHEAD + len(envelope_id)
        parts: list[bytes] = []
        j = i
        while j < n and j - i < envelope_events:
            event = events[j]
            if isinstance(event, dict) and "id" not in event:
                event["id"] = f"{envelope_id}-{j - i}"
            encoded = orjson.dumps(event)
            if size + len(encoded) + 1 > limit:
                if not parts:
                    raise EventTooLarge(j, size + len(encoded), limit)
                break
            parts.append(encoded)
            size += len(encoded) + 1
            j += 1
        payload = b'{"id":%s,"events":[%s]}' % (orjson.dumps(envelope_id), b",".join(parts))
        out.append((envelope_id, payload, j - i))
        i = j
    return out


def _describe(exc: BaseException) -> str:
    """Why an envelope was not stored, in a line for the 429's ``error``."""
    description = getattr(exc, "description", None)  # a JetStream API error
    if description:
        return f"the stream refused: {description}"
    if isinstance(exc, (TimeoutError, nats.errors.TimeoutError)):
        return "no acknowledgement in time"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DurableIngest:
    """The state behind one durable ingest app (``app.state.sluiceway``).

    Owns the NATS connection (made by the app's lifespan, reconnecting for ever) and the
    counters; ``draining`` is set at shutdown (new requests get 503).
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subject: str,
        limits: StreamLimits | None,
        envelope_events: int,
        ack_timeout: float,
        registry: CollectorRegistry,
        token: str | None,
        protect_metrics: bool,
        keys: KeyStore | None,
    ) -> None:
        if protect_metrics and token is None:
            raise ValueError("protect_metrics needs a token")
        self.url = url
        self.stream = stream
        self.subject, self.priority_subject, _ = subjects(subject)
        self.limits = limits
        self.envelope_events = envelope_events
        self.ack_timeout = ack_timeout
        self.registry = registry
        self.keys = keys
        self.protect_metrics = protect_metrics
        self._expected = None if token is None else f"Bearer {token}"
        self.nc: NATS | None = None
        self.js: Any = None
        self.draining = False
        self.published = Counter(
            "sluiceway_ingest_published_events",
            "Events stored in the stream (acknowledged by JetStream).",
            registry=registry,
        )
        self.envelopes = Counter(
            "sluiceway_ingest_published_envelopes",
            "Envelopes stored in the stream.",
            registry=registry,
        )
        self.duplicates = Counter(
            "sluiceway_ingest_duplicate_envelopes",
            "Envelopes JetStream had already stored under the same Nats-Msg-Id (a resend).",
            registry=registry,
        )
        self.refused = Counter(
            "sluiceway_ingest_refused_events",
            "Events answered with 429 (the stream refused or did not acknowledge in time).",
            registry=registry,
        )

    def authorised(self, request: Request) -> bool:
        """True without a token, or when the request carries it (constant-time compare)."""
        if self._expected is None:
            return True
        got = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(got, self._expected.encode())

    async def connect(self) -> None:
        """Connect (reconnecting for ever once connected); set up the stream if given limits."""
        self.nc = await nats.connect(
            self.url,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self.js = self.nc.jetstream()
        if self.limits is not None:
            await ensure_ingest_stream(self.js, self.stream, self.subject, self.limits)

    # One log line per change of state, never a traceback per reconnection attempt.
    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS error: %s", _describe(exc))

    async def _on_disconnected(self) -> None:
        if not self.draining:
            log.warning("disconnected from NATS; reconnecting (requests get 429 meanwhile)")

    async def _on_reconnected(self) -> None:
        log.warning("reconnected to NATS")

    async def close(self) -> None:
        """Flush and close the connection."""
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    @property
    def limit(self) -> int:
        """The largest envelope the server takes, less room for headers."""
        payload = self.nc.max_payload if self.nc is not None else 1 << 20
        return payload - _HEADER_ROOM

    async def publish(
        self, envelopes: list[tuple[str, bytes, int]], priority: bool, keyed: bool
    ) -> tuple[int, str | None]:
        """Publish in order, each after the previous one's ack; stop at the first refusal.

        Returns the events of the stored envelopes and, if one was refused, why.
        """
        subject = self.priority_subject if priority else self.subject
        accepted = 0
        for envelope_id, payload, count in envelopes:
            headers = {"Nats-Msg-Id": envelope_id} if keyed else None
            try:
                ack = await self.js.publish(
                    subject, payload, timeout=self.ack_timeout, stream=self.stream, headers=headers
                )
            except Exception as exc:  # noqa: BLE001 - a refusal, a timeout, a lost connection
                return accepted, _describe(exc)
            accepted += count
            if getattr(ack, "duplicate", False):
                # Stored before under this id (a resend, or a suffix resent by a client):
                # counted as accepted, as the earlier send stored it; not stored again.
                self.duplicates.inc()
                log.debug("envelope %s was already stored: not stored again", envelope_id)
                continue
            self.envelopes.inc()
        return accepted, None


def durable_ingest_app(
    url: str,
    *,
    stream: str = "SLUICEWAY",
    subject: str = "sluiceway.events",
    limits: StreamLimits | None = None,
    envelope_events: int = 1000,
    ack_timeout: float = 5.0,
    max_body: int = DEFAULT_MAX_BODY,
    token: str | None = None,
    retry_after: float = 1.0,
    validate: Callable[[Any], object] | None = None,
    registry: CollectorRegistry | None = None,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    protect_metrics: bool = False,
    idempotency_keys: int = 10_000,
    idempotency_ttl: float = 300.0,
    idempotency_store: KeyStore | None = None,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """The ingest ASGI app whose 202 means "stored in the JetStream stream".

    Same routes, bodies, limits, auth and idempotency as :func:`sluiceway.http.ingest_app`
    (``?wait=true`` is not offered: the handler runs in another tier). ``limits``: create
    or update the stream with these bounds at startup (None: use the stream as it is).
    ``envelope_events``: events per envelope at most; ``ack_timeout``: seconds to wait for
    each envelope's ack before answering 429. ``body_timeout``: as for ``ingest_app`` (408).
    Bodies over 256 KiB are parsed and cut into envelopes in a worker thread.
    """
    keys = idempotency_store
    if keys is None and idempotency_keys > 0:
        keys = IdempotencyStore(idempotency_keys, idempotency_ttl)
    ingest = DurableIngest(
        url,
        stream=stream,
        subject=subject,
        limits=limits,
        envelope_events=envelope_events,
        ack_timeout=ack_timeout,
        registry=registry if registry is not None else CollectorRegistry(),
        token=token,
        protect_metrics=protect_metrics,
        keys=keys,
    )
    retry = str(max(1, math.ceil(retry_after)))
    bodies = Bodies(
        max_body=max_body,
        max_inflight_bytes=max_inflight_bytes,
        validate=validate,
        retry_after=retry,
        body_timeout=body_timeout,
    )

    async def events(request: Request) -> Response:
        if not ingest.authorised(request):
            return unauthorised()
        return await answer_once(ingest.keys, request, admit)

    async def admit(request: Request, admitted: dict[str, int], key: str | None) -> Answer:
        if ingest.draining or ingest.js is None:
            return Answer(503, {"error": "draining"}, {"Retry-After": "5"})
        if request.query_params.get("wait", "").lower() in ("1", "true"):
            return Answer(400, {"error": "?wait=true is not offered by a durable ingest"}, {})
        async with bodies.parsed(request) as parsed:
            if isinstance(parsed, Answer):
                return parsed
            batch = parsed.events
            try:
                split = (batch, key, ingest.envelope_events, ingest.limit)
                if len(parsed.body) > OFF_LOOP_BYTES:  # keep the loop free meanwhile
                    envelopes = await asyncio.to_thread(split_envelopes, *split)
                else:
                    envelopes = split_envelopes(*split)
            except EventTooLarge as exc:
                line = parsed.line_of(exc.index)
                return Answer(413, {"error": str(exc), "line": line, "index": exc.index}, {})
            accepted, error = await ingest.publish(envelopes, parsed.priority, key is not None)
        admitted["accepted"] = accepted
        ingest.published.inc(accepted)
        if accepted == len(batch):
            return Answer(202, {"accepted": accepted}, {})
        ingest.refused.inc(len(batch) - accepted)
        return Answer(429, {"accepted": accepted, "error": error}, {"Retry-After": retry})

    async def healthz(request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def readyz(request: Request) -> Response:
        ready = not ingest.draining and ingest.nc is not None and ingest.nc.is_connected
        return _json(200 if ready else 503, {"ready": ready})

    async def metrics(request: Request) -> Response:
        if ingest.protect_metrics and not ingest.authorised(request):
            return unauthorised()
        return Response(generate_latest(ingest.registry), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        await ingest.connect()
        try:
            yield
        finally:
            ingest.draining = True
            await ingest.close()

    app = Starlette(
        routes=[
            Route("/v1/events", events, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    app.state.sluiceway = ingest
    return app


async def setup_stream(url: str, stream: str, subject: str, limits: StreamLimits) -> None:
    """Connect once, create or update the stream, disconnect (``serve --nats`` at start-up)."""

    async def quiet(exc: Exception) -> None:
        log.debug("NATS error: %s", _describe(exc))

    connecting = nats.connect(url, connect_timeout=2, max_reconnect_attempts=1, error_cb=quiet)
    nc = await asyncio.wait_for(connecting, 15)
    try:
        await ensure_ingest_stream(nc.jetstream(), stream, subject, limits)
    finally:
        await nc.close()
