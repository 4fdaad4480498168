"""HTTP ingest with backpressure (``pip install 'sluiceway[http]'``).

An ASGI app (Starlette) to run with uvicorn or mount in your app::

    app = sluiceway.http.ingest_app(make_pipeline)     # a factory, or a Pipeline

``POST /v1/events`` takes a JSON array of objects (``application/json``) or one object a
line (``application/x-ndjson``); ``X-Priority: 1`` sends them down the priority lane. The
whole body is parsed and validated before anything is admitted. Answers:

=====  =====================================================================
202    ``{"accepted": n}``: every event admitted
429    ``{"accepted": k}`` and ``Retry-After``: the first k admitted; resend the rest
400    ``{"error": ..., "line": n}``: the first bad line (1-based), nothing admitted
401    a bearer token is configured and the request lacks it
413    the body is larger than ``max_body`` bytes
415    another content type
503    the pipeline is draining
=====  =====================================================================

``?wait=true`` answers only once the admitted events are processed or dead-lettered, with
``processed`` and ``dead_lettered`` counts. ``/healthz`` says the process is alive,
``/readyz`` whether it admits (not draining, not every breaker open), ``/metrics`` is
Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

try:
    import orjson
    from prometheus_client import CollectorRegistry, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"sluiceway.http needs {exc.name!r}: pip install 'sluiceway[http]'") from exc

from . import prometheus as swp
from ._core._completion import Completion
from ._core._pipeline import Pipeline

__all__ = ["BadBody", "ingest_app", "parse_body"]

JSON = "application/json"
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")
DEFAULT_MAX_BODY = 8 * 2**20


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


def _json(status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type=JSON)


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
) -> Starlette:
    """Build the ingest ASGI app around ``pipeline`` (or a factory called at startup).

    The app starts the pipeline at startup and drains it at shutdown (``drain_timeout``).
    ``token`` enables bearer-token auth (compared in constant time). ``validate(event)``
    may raise to reject an event (the request then gets 400 and nothing is admitted).
    """
    state: dict[str, Pipeline] = {}
    metrics_registry = registry if registry is not None else CollectorRegistry()
    expected = None if token is None else f"Bearer {token}".encode()

    def current() -> Pipeline:
        p = state.get("pipeline")
        if p is None:
            raise RuntimeError("the app has not started (no lifespan startup yet)")
        return p

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        got = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(got, expected)

    async def events(request: Request) -> Response:
        if not authorised(request):
            return _json(401, {"error": "missing or wrong bearer token"},
                         {"WWW-Authenticate": "Bearer"})  # fmt: skip
        p = current()
        if p.closed:
            return _json(503, {"error": "draining"}, {"Retry-After": "5"})
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != JSON and content_type not in NDJSON:
            return _json(415, {"error": f"content type must be {JSON} or {NDJSON[0]}"})
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return _json(413, {"error": f"body larger than {max_body} bytes"})
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return _json(413, {"error": f"body larger than {max_body} bytes"})
            chunks.append(chunk)
        try:
            batch = parse_body(b"".join(chunks), content_type, validate)
        except BadBody as exc:
            return _json(400, {"error": exc.message, "line": exc.line})
        priority = request.headers.get("x-priority", "0").strip() in ("1", "true")
        wait = request.query_params.get("wait", "").lower() in ("1", "true")
        if wait:
            completion = p.submit_tracked(batch, priority)
            accepted = completion.accepted
            await _settled(completion)
            body: dict[str, Any] = {
                "accepted": accepted,
                "processed": completion.processed,
                "dead_lettered": completion.dead_lettered,
            }
        else:
            accepted = p.submit_many(batch, priority)
            body = {"accepted": accepted}
        if accepted == len(batch):
            return _json(202, body)
        if p.closed:
            return _json(503, {**body, "error": "draining"}, {"Retry-After": "5"})
        return _json(429, body, {"Retry-After": str(max(1, math.ceil(retry_after)))})

    async def healthz(request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def readyz(request: Request) -> Response:
        p = state.get("pipeline")
        ready = p is not None and p.accepting
        return _json(200 if ready else 503, {"ready": ready})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(metrics_registry), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        p = pipeline() if callable(pipeline) and not isinstance(pipeline, Pipeline) else pipeline
        state["pipeline"] = p
        swp.register(p, metrics_registry, name=name)
        p.start()
        try:
            yield
        finally:
            await p.ashutdown(drain_timeout)
            swp.unregister(name, metrics_registry)

    return Starlette(
        routes=[
            Route("/v1/events", events, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )


async def _settled(completion: Completion) -> None:
    """Wait, without blocking the loop, until every admitted item has an outcome."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def fire(_: Completion) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(resolve)

    completion.add_done_callback(fire)
    await done
