"""``sluiceway serve --nats URL``: the durable ingest app under uvicorn, one or many workers.

No pipeline factory: each worker process publishes to the JetStream stream over its own
connection (``sluiceway worker`` processes consume it). The parent connects once at
start-up to create or update the stream with the capacity options (``--max-msgs``,
``--max-bytes``, ``--duplicate-window``; discard policy new), so a server that cannot be
reached fails before any worker starts. Workers share one idempotency store and sum their
metrics as ``sluiceway serve`` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._durable import DurableIngest, StreamLimits, durable_ingest_app, setup_stream
from ._idempotency import SharedIdempotencyStore
from ._logging import configure_from_env
from ._serve import (
    KEYS_FILE,
    MetricsFile,
    ServeError,
    SummedMetrics,
    _netloc,
    log,
    run_uvicorn,
)
from .http import DEFAULT_MAX_INFLIGHT_BYTES, unauthorised

__all__ = ["app_factory", "serve_durable"]

ENV = "SLUICEWAY_SERVE_NATS"


def app_factory() -> Any:
    """The uvicorn app factory each worker process calls (options come from the env)."""
    options = json.loads(os.environ[ENV])
    configure_from_env()  # a worker process logs as the command asked its parent to
    directory = Path(options["metrics_dir"])
    registry = CollectorRegistry()
    shared = None
    if options["idempotency_keys"] > 0 and options["workers"] > 1:
        shared = SharedIdempotencyStore(
            directory / KEYS_FILE, options["idempotency_keys"], options["idempotency_ttl"]
        )
    app = durable_ingest_app(
        options["url"],
        stream=options["stream"],
        subject=options["subject"],
        envelope_events=options["envelope_events"],
        ack_timeout=options["ack_timeout"],
        max_body=options["max_body"],
        token=options.get("token"),
        registry=registry,
        max_inflight_bytes=options["max_inflight_bytes"],
        protect_metrics=options["protect_metrics"],
        idempotency_keys=options["idempotency_keys"],
        idempotency_ttl=options["idempotency_ttl"],
        body_timeout=options["body_timeout"],
        idempotency_store=shared,
    )
    ingest: DurableIngest = app.state.sluiceway
    summed = CollectorRegistry()
    summed.register(SummedMetrics(directory))
    snapshots = MetricsFile(directory, registry)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        async with inner(a):
            log.info(
                "publishing to stream %s (pid %d)",
                ingest.stream,
                os.getpid(),
                extra={"pid": os.getpid(), "stream": ingest.stream},
            )
            snapshots.start()
            try:
                yield
            finally:
                ingest.draining = True
        snapshots.stop()
        if shared is not None:
            shared.close()

    app.router.lifespan_context = lifespan

    async def metrics(request: Request) -> Response:
        if ingest.protect_metrics and not ingest.authorised(request):
            return unauthorised()
        return Response(generate_latest(summed), media_type="text/plain; version=0.0.4")

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/metrics"]
    app.router.routes.append(Route("/metrics", metrics))
    return app


def serve_durable(
    url: str,
    *,
    stream: str = "SLUICEWAY",
    subject: str = "sluiceway.events",
    limits: StreamLimits | None = None,
    envelope_events: int = 1000,
    ack_timeout: float = 5.0,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    metrics_port: int | None = None,
    token: str | None = None,
    max_body: int = 8 * 2**20,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    graceful_timeout: float | None = 60.0,
    protect_metrics: bool = False,
    idempotency_keys: int = 10_000,
    idempotency_ttl: float = 300.0,
    body_timeout: float | None = 30.0,
) -> int:
    """Run the durable ingest service until SIGTERM/SIGINT (open requests finish first)."""
    from .nats import _redact, check_servers  # noqa: PLC0415 - the URL check of sluiceway worker

    if protect_metrics and token is None:
        raise ServeError("--protect-metrics needs a token ($SLUICEWAY_TOKEN or --token-file)")
    if protect_metrics and metrics_port is not None:
        raise ServeError(
            "--metrics-port serves without auth: with --protect-metrics, scrape /metrics on "
            "the main port"
        )
    try:
        check_servers(url)
    except ValueError as exc:
        raise ServeError(f"--nats {str(exc).removeprefix('url: ')}") from None
    limits = limits if limits is not None else StreamLimits()
    try:
        asyncio.run(setup_stream(url, stream, subject, limits))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        text = str(exc) or type(exc).__name__
        raise ServeError(f"cannot set up stream {stream} on {url}: {text}") from None
    log.info(
        "stream %s: max_msgs=%s max_bytes=%s duplicate_window=%ss, discard new",
        stream,
        limits.max_msgs,
        limits.max_bytes,
        limits.duplicate_window,
    )
    with tempfile.TemporaryDirectory(prefix="sluiceway-") as directory:
        SharedIdempotencyStore.create(Path(directory) / KEYS_FILE)
        os.environ[ENV] = json.dumps(
            {
                "url": url,
                "stream": stream,
                "subject": subject,
                "envelope_events": envelope_events,
                "ack_timeout": ack_timeout,
                "metrics_dir": directory,
                "token": token,
                "max_body": max_body,
                "max_inflight_bytes": max_inflight_bytes,
                "protect_metrics": protect_metrics,
                "idempotency_keys": idempotency_keys,
                "idempotency_ttl": idempotency_ttl,
                "body_timeout": body_timeout,
                "workers": workers,
            }
        )
        server = None
        if metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(SummedMetrics(Path(directory)))
            server, _ = start_http_server(metrics_port, addr=host, registry=registry)
            metrics_url = f"http://{_netloc(host, server.server_port)}/metrics"
            log.info("serving metrics on %s", metrics_url, extra={"metrics_url": metrics_url})
        listen = f"http://{_netloc(host, port)}"
        log.info(
            "listening on %s with %d worker(s), publishing to stream %s, subject %s at %s",
            listen,
            workers,
            stream,
            subject,
            _redact(url),
            extra={
                "url": listen,
                "host": host,
                "port": port,
                "workers": workers,
                "stream": stream,
                "subject": subject,
                "nats_url": _redact(url),
            },
        )
        try:
            run_uvicorn(
                "sluiceway._durable_serve:app_factory", host, port, workers, graceful_timeout
            )
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
    return 0


def serve_durable_command(args: Any, token: str | None) -> int:
    """``sluiceway serve --nats`` with parsed arguments."""
    if args.factory is not None:
        raise ServeError("--nats takes no pipeline factory: the handler runs in `sluiceway worker`")
    return serve_durable(
        args.nats,
        stream=args.stream,
        subject=args.subject,
        limits=StreamLimits(args.max_msgs, args.max_bytes, args.duplicate_window),
        envelope_events=args.envelope_events,
        ack_timeout=args.ack_timeout,
        host=args.host,
        port=args.port,
        workers=args.workers,
        metrics_port=args.metrics_port,
        token=token,
        max_body=args.max_body,
        max_inflight_bytes=args.max_inflight_bytes,
        graceful_timeout=args.graceful_timeout,
        protect_metrics=args.protect_metrics,
        idempotency_keys=args.idempotency_keys,
        idempotency_ttl=args.idempotency_ttl,
        body_timeout=args.body_timeout or None,
    )
