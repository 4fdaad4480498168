"""HTTP ingest with backpressure (``pip install 'sluiceway[http]'``).

An ASGI app (Starlette) to run with uvicorn or mount in your app::

    app = sluiceway.http.ingest_app(make_pipeline)     # a factory, or a Pipeline

``POST /v1/events`` takes a JSON array of objects (``application/json``) or one object a
line (``application/x-ndjson``); ``X-Priority: 1`` sends them down the priority lane. The
whole body is parsed and validated (and, keyed, every key computed) before anything is
admitted. Answers:

=====  =====================================================================
202    ``{"accepted": n}``: every event admitted
429    ``{"accepted": k}`` and ``Retry-After``: the first k admitted; resend the rest
400    ``{"error": ..., "line": n}``: the first bad line (1-based), nothing admitted (a
       failing key function adds ``"index"``)
401    a bearer token is configured and the request lacks it
408    the body was not received within ``body_timeout`` seconds
413    the body is larger than ``max_body`` bytes
415    another content type
503    the pipeline is draining, or too many bytes of bodies are being read; with
       ``"accepted": k``, those k are held (drained or dead-lettered)
=====  =====================================================================

``?wait=true`` answers only once the admitted events are processed or dead-lettered, with
``processed`` and ``dead_lettered`` counts (503 if the drain begins first). A request with
an ``Idempotency-Key`` that was already answered gets that answer again, without its
events being admitted again (see ``ingest_app``). ``/healthz`` says the process is alive,
``/readyz`` whether it admits (not draining, not every breaker open), ``/metrics`` is
Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

try:
    import orjson
    from prometheus_client import CollectorRegistry, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"sluiceway.http needs {exc.name!r}: pip install 'sluiceway[http]'") from exc

from . import prometheus as swp
from ._core._completion import Completion
from ._core._pipeline import Pipeline
from ._deadletters import JsonlDeadLetters
from ._errors import InvalidItem
from ._idempotency import Answer, IdempotencyStore, KeyStore
from ._records import DrainReport

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_INFLIGHT_BYTES",
    "BadBody",
    "Bodies",
    "Ingest",
    "Parsed",
    "answer_once",
    "ingest_app",
    "parse_body",
    "unauthorised",
]

log = logging.getLogger("sluiceway.http")

JSON = "application/json"
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")
DEFAULT_MAX_BODY = 8 * 2**20
DEFAULT_MAX_INFLIGHT_BYTES = 64 * 2**20
DEFAULT_BODY_TIMEOUT = 30.0
OFF_LOOP_BYTES = 256 * 2**10  # bodies larger than this are parsed in a thread
MAX_KEY_LENGTH = 200
INTERRUPTED = "interrupted after admitting: the accepted events are held"
HELD = "draining: the accepted events are held (drained or dead-lettered)"


class BadBody(ValueError):
    """A body that is not a valid list of events; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def parse_body(
    body: bytes, content_type: str, validate: Callable[[Any], object] | None = None
) -> list[Any]:
    """Every event of ``body``, or :class:`BadBody` naming the first bad one."""
    events: list[Any] = []
    if content_type == JSON:
        try:
            data = orjson.loads(body) if body.strip() else []
        except orjson.JSONDecodeError as exc:
            line = body.count(b"\n", 0, getattr(exc, "pos", 0)) + 1
            raise BadBody(line, f"not JSON: {exc}") from None
        if not isinstance(data, list):
            raise BadBody(1, "expected a JSON array of event objects")
        events = data
    else:
        for number, raw in enumerate(body.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                events.append(orjson.loads(raw))
            except orjson.JSONDecodeError as exc:
                raise BadBody(number, f"not JSON: {exc}") from None
            if not isinstance(events[-1], dict):
                raise BadBody(number, "each line must be a JSON object")
        return _validated(events, validate, lines=True, body=body)
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadBody(i + 1, "each array element must be a JSON object")
    return _validated(events, validate, lines=False, body=body)


def _validated(
    events: list[Any], validate: Callable[[Any], object] | None, *, lines: bool, body: bytes
) -> list[Any]:
    if validate is None:
        return events
    numbers = None
    if lines:
        numbers = [n for n, raw in enumerate(body.split(b"\n"), 1) if raw.strip()]
    for i, event in enumerate(events):
        try:
            validate(event)
        except Exception as exc:  # noqa: BLE001 - any validation failure is a 400
            raise BadBody(numbers[i] if numbers else i + 1, f"invalid event: {exc}") from None
    return events


def unauthorised() -> Response:
    """The 401 answer to a request without the bearer token."""
    return _json(401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"})


def _answer(answer: Answer, *, replayed: bool = False) -> Response:
    headers = {**answer.headers, "Idempotent-Replayed": "true"} if replayed else answer.headers
    return _json(answer.status, answer.body, headers)


def _json(status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type=JSON)


Admit = Callable[[Request, dict[str, int], "str | None"], Awaitable[Answer]]


class Parsed:
    """One request's events, parsed and validated, with what is needed to name a line."""

    __slots__ = ("body", "content_type", "events", "priority")

    def __init__(self, events: list[Any], body: bytes, content_type: str, priority: bool) -> None:
        self.events = events
        self.body = body
        self.content_type = content_type
        self.priority = priority

    def line_of(self, index: int) -> int:
        """The 1-based line (NDJSON) or element (JSON array) of the event at ``index``."""
        return _line_of(index, self.body, self.content_type)


class Bodies:
    """Reads request bodies within the limits and parses them: shared by both ingest modes.

    The content type, ``max_body`` (413), the cap on bytes of bodies being read at once
    (503 before the body is read; a lone request is always let in), the parse and
    ``validate`` (400 naming the first bad line) are the same whether the events then go to
    an in-process pipeline (:func:`ingest_app`) or to a JetStream stream
    (``sluiceway serve --nats``). A body not received within ``body_timeout`` seconds gets
    408 (and its reservation is released); a client that disconnects mid-body gets nothing
    (one DEBUG line). A body over 256 KiB is parsed and validated in a worker thread, so
    that the loop keeps answering other requests meanwhile.
    """

    def __init__(
        self,
        *,
        max_body: int,
        max_inflight_bytes: int,
        validate: Callable[[Any], object] | None,
        retry_after: str,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.body_timeout = body_timeout
        self.max_body = max_body
        self.max_inflight_bytes = max_inflight_bytes
        self.validate = validate
        self.retry_after = retry_after
        self.inflight_bytes = 0  # reserved by requests reading their body (loop thread only)
        self._too_big = f"body larger than {max_body} bytes"

    async def _read(self, request: Request) -> bytes | None:
        """The body, or None once it grows past ``max_body``."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    @contextlib.asynccontextmanager
    async def parsed(self, request: Request) -> AsyncIterator[Parsed | Answer]:
        """The request's events, or the answer refusing it.

        The body's bytes stay reserved until the block ends (the events are handed on).
        """
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != JSON and content_type not in NDJSON:
            yield Answer(415, {"error": f"content type must be {JSON} or {NDJSON[0]}"}, {})
            return
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else self.max_body  # chunked: the worst
        if size > self.max_body:
            yield Answer(413, {"error": self._too_big}, {})
            return
        # Invariant: inflight_bytes is the sum of the sizes reserved by the requests between
        # here and the end of their block (tests/test_http.py::
        # test_bytes_in_flight_are_capped_without_reading_the_body).
        if self.inflight_bytes and self.inflight_bytes + size > self.max_inflight_bytes:
            yield Answer(503, {"error": f"more than {self.max_inflight_bytes} bytes of bodies "
                               "being read; retry"}, {"Retry-After": self.retry_after})  # fmt: skip
            return
        self.inflight_bytes += size
        try:
            try:
                body = await asyncio.wait_for(self._read(request), self.body_timeout)
            except TimeoutError:
                error = f"body not received within {self.body_timeout:g} s"
                yield Answer(408, {"error": error}, {"Connection": "close"})
                return
            except ClientDisconnect:
                log.debug("client disconnected before sending its whole body")
                yield Answer(400, {"error": "client disconnected"}, {})
                return
            if body is None:
                yield Answer(413, {"error": self._too_big}, {})
                return
            try:
                if len(body) > OFF_LOOP_BYTES:
                    batch = await asyncio.to_thread(parse_body, body, content_type, self.validate)
                else:
                    batch = parse_body(body, content_type, self.validate)
            except BadBody as exc:
                yield Answer(400, {"error": exc.message, "line": exc.line}, {})
                return
            priority = request.headers.get("x-priority", "0").strip() in ("1", "true")
            yield Parsed(batch, body, content_type, priority)
        finally:
            self.inflight_bytes -= size


async def answer_once(keys: KeyStore | None, request: Request, admit: Admit) -> Response:
    """Answer ``request`` with ``admit``; a repeat of its ``Idempotency-Key`` gets the same.

    ``admit(request, admitted, key)`` fills ``admitted["accepted"]`` as soon as events are
    admitted, so that an interrupted request still records what it admitted; ``key`` is the
    request's key when it is well-formed (even with ``keys`` off), else None.
    """
    key = request.headers.get("idempotency-key")
    usable = key if key is not None and 0 < len(key) <= MAX_KEY_LENGTH else None
    if key is None or keys is None:
        return _answer(await admit(request, {}, usable))
    if usable is None:
        return _json(400, {"error": f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} chars"})
    claimed = await keys.claim(key)
    if isinstance(claimed, Answer):
        return _answer(claimed, replayed=True)
    admitted: dict[str, int] = {}
    answer: Answer | None = None
    try:
        answer = await admit(request, admitted, key)
        return _answer(answer)
    finally:
        if answer is None and admitted.get("accepted"):  # interrupted after admitting
            answer = Answer(503, {"accepted": admitted["accepted"], "error": INTERRUPTED},
                            {"Retry-After": "5"})  # fmt: skip
        claimed.finish(answer if answer is not None and answer.body.get("accepted") else None)


class Ingest:
    """The state behind one ingest app (``app.state.sluiceway``): its pipeline and drain.

    The pipeline is built and started by the app's lifespan, or on first use when the app
    is mounted in a host that does not run it. The drain begins once, with
    :meth:`begin_drain` (``sluiceway serve`` calls it on SIGTERM) or at lifespan shutdown.
    """

    def __init__(
        self,
        source: Pipeline | Callable[[], Pipeline],
        *,
        drain_timeout: float | None,
        dead_letters: str | os.PathLike[str] | None,
        registry: CollectorRegistry,
        name: str,
        token: str | None = None,
        protect_metrics: bool = False,
        idempotency_keys: int = 10_000,
        idempotency_ttl: float = 300.0,
        idempotency_store: KeyStore | None = None,
    ) -> None:
        if protect_metrics and token is None:
            raise ValueError("protect_metrics needs a token")
        self.source = source
        self._expected = None if token is None else f"Bearer {token}".encode()
        self.protect_metrics = protect_metrics
        self.keys: KeyStore | None = idempotency_store
        if idempotency_store is None and idempotency_keys > 0:
            self.keys = IdempotencyStore(idempotency_keys, idempotency_ttl)
        self.drain_timeout = drain_timeout
        self.dead_letters = None if dead_letters is None else JsonlDeadLetters(dead_letters)
        self.registry = registry
        self.name = name
        self.pipeline: Pipeline | None = None
        self.report: DrainReport | None = None
        self.lifespan_started = False
        self.bodies: Bodies | None = None  # set by ingest_app
        self._drain: asyncio.Task[DrainReport] | None = None
        self._draining: asyncio.Event | None = None  # created on the serving loop

    @property
    def inflight_bytes(self) -> int:
        """Bytes of bodies being read or submitted now (see :class:`Bodies`)."""
        return 0 if self.bodies is None else self.bodies.inflight_bytes

    def authorised(self, request: Request) -> bool:
        """True without a token, or when the request carries it (constant-time compare)."""
        if self._expected is None:
            return True
        got = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(got, self._expected)

    def metrics_allowed(self, request: Request) -> bool:
        """``/metrics`` is open unless ``protect_metrics``; then it needs the token."""
        return not self.protect_metrics or self.authorised(request)

    def current(self) -> Pipeline:
        """The running pipeline; built and started now if the lifespan did not run."""
        if self.pipeline is None:
            if not self.lifespan_started:
                log.warning(
                    "ingest app %r started on first use: no lifespan ran, so nothing will "
                    "drain its pipeline at shutdown (include app.router.lifespan_context "
                    "in the host app's lifespan)",
                    self.name,
                )
            self.start()
        assert self.pipeline is not None
        return self.pipeline

    def start(self) -> None:
        """Build the pipeline (calling the factory), register its metrics, start it."""
        source = self.source
        p = source if isinstance(source, Pipeline) else source()
        if not isinstance(p, Pipeline):
            raise TypeError(f"the factory returned {type(p).__name__}, not a Pipeline")
        if self.dead_letters is not None and _keeps_dead_letters_in_memory(p):
            p.add_dead_letter_listener(self.dead_letters)
        swp.register(p, self.registry, name=self.name)
        p.start()
        self.pipeline = p

    @property
    def drain_begun(self) -> bool:
        """True once :meth:`begin_drain` ran: nothing more is admitted or started."""
        return self._drain is not None

    def draining(self) -> asyncio.Event:
        """Set once the drain has begun (answers open ``?wait=true`` requests with 503)."""
        if self._draining is None:
            self._draining = asyncio.Event()
        return self._draining

    def begin_drain(self) -> asyncio.Task[DrainReport]:
        """Start draining (once; on the serving loop); the task ends with the report."""
        if self._drain is None:
            self.draining().set()
            self._drain = asyncio.get_running_loop().create_task(self._drained())
        return self._drain

    async def _drained(self) -> DrainReport:
        p = self.pipeline
        if p is None:  # never started: nothing was accepted
            self.report = DrainReport(0, 0, 0, 0, timed_out=False)
        else:
            self.report = await p.ashutdown(self.drain_timeout)
            swp.unregister(self.name, self.registry)
        return self.report

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """Start the pipeline; at shutdown, drain it (``drain_timeout``)."""
        self.lifespan_started = True
        if self.pipeline is None:
            self.start()
        try:
            yield
        finally:
            await self.begin_drain()


def _keeps_dead_letters_in_memory(p: Pipeline) -> bool:
    try:
        p.dead_letters  # noqa: B018 - raises unless the default in-memory sink is in use
    except AttributeError:
        return False
    return True


def _line_of(index: int, body: bytes, content_type: str) -> int:
    """The 1-based line (NDJSON) or element (JSON array) of the event at ``index``."""
    if content_type == JSON:
        return index + 1
    return [n for n, raw in enumerate(body.split(b"\n"), 1) if raw.strip()][index]


def ingest_app(
    pipeline: Pipeline | Callable[[], Pipeline],
    *,
    max_body: int = DEFAULT_MAX_BODY,
    token: str | None = None,
    retry_after: float = 1.0,
    validate: Callable[[Any], object] | None = None,
    name: str = "http",
    drain_timeout: float | None = 30.0,
    registry: CollectorRegistry | None = None,
    dead_letters: str | os.PathLike[str] | None = None,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    protect_metrics: bool = False,
    idempotency_keys: int = 10_000,
    idempotency_ttl: float = 300.0,
    idempotency_store: KeyStore | None = None,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """Build the ingest ASGI app around ``pipeline`` (or a factory called at startup).

    The app starts the pipeline at startup and drains it at shutdown (``drain_timeout``);
    mounted in a host app that does not run its lifespan, it starts the pipeline on first
    use (include ``app.router.lifespan_context`` in the host's lifespan so that shutdown
    drains it). ``token`` enables bearer-token auth (compared in constant time) on
    ``POST /v1/events`` and, with ``protect_metrics``, on ``/metrics`` (probes stay open).
    ``validate(event)`` may raise to reject an event (the request then gets 400 and nothing
    is admitted). ``dead_letters``: a JSONL file to which the dead letters of a pipeline
    using the default in-memory sink are also appended, so that events accepted with 202
    but not drained in time are kept. ``max_inflight_bytes`` caps the bytes of bodies being
    read at once (counted by their ``Content-Length``, or ``max_body`` when chunked): a
    request beyond it gets 503 and ``Retry-After`` before its body is read (a lone request
    is always let in). ``idempotency_keys`` and ``idempotency_ttl``: the answers to that
    many recent ``Idempotency-Key`` headers are kept that many seconds after they were
    given, and a repeat of a key gets the stored answer (header ``Idempotent-Replayed``)
    without its events being admitted again; a repeat while the first is still running
    waits for the first's answer. Only answers that admitted events are kept
    (``idempotency_keys=0`` turns this off). ``idempotency_store`` replaces the in-process
    store (``sluiceway serve`` gives its workers one shared store). ``body_timeout``: a
    request whose body is not received within that many seconds gets 408 and its bytes are
    released (None: no limit). Bodies over 256 KiB are parsed (and ``validate`` called) in a
    worker thread.
    """
    ingest = Ingest(
        pipeline,
        drain_timeout=drain_timeout,
        dead_letters=dead_letters,
        registry=registry if registry is not None else CollectorRegistry(),
        name=name,
        token=token,
        protect_metrics=protect_metrics,
        idempotency_keys=idempotency_keys,
        idempotency_ttl=idempotency_ttl,
        idempotency_store=idempotency_store,
    )
    retry = str(max(1, math.ceil(retry_after)))
    bodies = Bodies(
        max_body=max_body,
        max_inflight_bytes=max_inflight_bytes,
        validate=validate,
        retry_after=retry,
        body_timeout=body_timeout,
    )
    ingest.bodies = bodies

    async def events(request: Request) -> Response:
        if not ingest.authorised(request):
            return unauthorised()
        return await answer_once(ingest.keys, request, admit)

    async def admit(request: Request, admitted: dict[str, int], key: str | None) -> Answer:
        """Read, parse and admit one request's events; ``admitted`` learns the count."""
        if ingest.drain_begun:  # (a lazily started app must not start a pipeline now)
            return Answer(503, {"error": "draining"}, {"Retry-After": "5"})
        p = ingest.current()
        if p.closed:
            return Answer(503, {"error": "draining"}, {"Retry-After": "5"})
        wait = request.query_params.get("wait", "").lower() in ("1", "true")
        async with bodies.parsed(request) as parsed:
            if isinstance(parsed, Answer):
                return parsed
            batch = parsed.events
            try:
                if wait:
                    completion = p.submit_tracked(batch, parsed.priority)
                    accepted = completion.accepted
                else:
                    accepted = p.submit_many(batch, parsed.priority)
            except InvalidItem as exc:
                line = parsed.line_of(exc.index)
                return Answer(400, {"error": str(exc), "line": line, "index": exc.index}, {})
        admitted["accepted"] = accepted
        out: dict[str, Any] = {"accepted": accepted}
        if wait:
            settled = await _settled(completion, ingest.draining())
            out["processed"] = completion.processed
            out["dead_lettered"] = completion.dead_lettered
            if not settled:
                return Answer(503, {**out, "error": HELD}, {"Retry-After": "5"})
        if accepted == len(batch):
            return Answer(202, out, {})
        if p.closed:
            return Answer(503, {**out, "error": "draining"}, {"Retry-After": "5"})
        return Answer(429, out, {"Retry-After": retry})

    async def healthz(request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def readyz(request: Request) -> Response:
        # A mounted app starts here too: a readiness probe must not wait for traffic that
        # the probe itself holds back.
        ready = not ingest.drain_begun and ingest.current().accepting
        return _json(200 if ready else 503, {"ready": ready})

    async def metrics(request: Request) -> Response:
        if not ingest.metrics_allowed(request):
            return unauthorised()
        return Response(generate_latest(ingest.registry), media_type="text/plain; version=0.0.4")

    app = Starlette(
        routes=[
            Route("/v1/events", events, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=ingest.lifespan,
    )
    app.state.sluiceway = ingest
    return app


async def _settled(completion: Completion, draining: asyncio.Event) -> bool:
    """Wait, without blocking the loop, for every admitted item's outcome (True) or the drain.

    False when the drain began first.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def fire(_: Completion) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(resolve)

    completion.add_done_callback(fire)
    drain = asyncio.ensure_future(draining.wait())
    try:
        await asyncio.wait((done, drain), return_when=asyncio.FIRST_COMPLETED)
    finally:
        drain.cancel()
    return done.done()
