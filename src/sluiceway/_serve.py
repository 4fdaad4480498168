"""``sluiceway serve module:factory``: the ingest app under uvicorn, one or many workers.

``factory()`` returns a :class:`sluiceway.Pipeline` (each worker process calls it once and
gets its own pipeline); ``module`` is imported with the working directory first on
``sys.path``. SIGTERM or SIGINT begins every worker's drain at once (open ``?wait=true``
requests get 503, new requests 503) and makes uvicorn stop accepting connections; the
drain lasts at most ``drain_timeout``, then what is left is dead-lettered, to the
``dead_letters`` JSONL file when the pipeline keeps its dead letters in memory. Both ends of
the drain are logged (``sluiceway.serve``, stderr).

The workers share one idempotency store (SQLite, in the server's temporary directory), so
that a client's resend is recognised whichever worker it reaches.

With one worker, ``/metrics`` and ``--metrics-port`` read the pipeline at scrape time. With
several, each worker rewrites its metrics file in a shared directory every half second
(through its drain, and once more after it), and ``/metrics`` on any worker, like
``--metrics-port`` on the parent, serves the live workers' metrics combined: counters and
histograms summed, gauges by the rule of :data:`GAUGES` (docs/metrics.md). The file of a
worker whose pid is gone, or that was not rewritten for :data:`STALE_AFTER` seconds, is left
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import uvicorn
import uvicorn.config
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._core._pipeline import Pipeline
from ._errors import SluicewayError
from ._factory import FactoryError, build_pipeline, load_factory
from ._idempotency import SharedIdempotencyStore
from ._logging import ENV as LOG_ENV
from ._logging import configure_from_env, say
from .http import DEFAULT_MAX_INFLIGHT_BYTES, Ingest, ingest_app, unauthorised

__all__ = [
    "GAUGES",
    "ServeError",
    "SummedMetrics",
    "aggregate",
    "app_factory",
    "serve",
    "serve_command",
]

log = logging.getLogger("sluiceway.serve")


class ServeError(SluicewayError, ValueError):
    """The options of ``serve`` cannot work together; the message says why."""


ENV = "SLUICEWAY_SERVE"
TOKEN_ENV = "SLUICEWAY_TOKEN"
KEYS_FILE = "idempotency.sqlite3"  # in the server's temporary directory, shared by workers
DEFAULT_DEAD_LETTERS = "sluiceway-dead-letters.jsonl"
WRITE_EVERY = 0.5
# The pipeline serve() built in this process to check the factory; with one worker,
# uvicorn runs the app in this same process and uses it instead of calling the factory again.
_checked: list[Pipeline] = []
# With one worker: the registry of the app running in this process, for --metrics-port.
_live: list[CollectorRegistry] = []


# How the workers' samples of one metric combine (the table in docs/metrics.md, "Several
# workers"). Counters and histograms always sum. A gauge sums when it is an amount (items,
# capacity); a ratio, a size or a state does not: it takes the maximum, the minimum or the
# mean named here. Any other gauge keeps one sample per worker, told apart by a ``worker``
# label (the worker's pid): a number that cannot be combined is never made up.
GAUGES: dict[str, str] = {
    "sluiceway_queue_depth": "sum",
    "sluiceway_queue_capacity": "sum",
    "sluiceway_in_flight": "sum",
    "sluiceway_dead_letters_undelivered": "sum",
    "sluiceway_queue_fill_ratio": "max",  # the fullest worker: the autoscaling signal
    "sluiceway_breaker_state": "max",  # the worst state of the shard on any worker
    "sluiceway_batch_size": "mean",
    "sluiceway_batch_duration_ema_seconds": "mean",
    "sluiceway_nats_consumer_lag": "max",  # one durable consumer, seen by every worker
    "sluiceway_nats_connected": "min",  # 1 only while every worker is connected
}
# A worker rewrites its file every WRITE_EVERY seconds while it lives (draining included);
# a file older than this belongs to a worker that is gone or frozen and is left out.
STALE_AFTER = 10.0


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a pid owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_snapshots(directory: Path) -> Iterator[tuple[int, str]]:
    """``(pid, text)`` of each worker's metrics file, for the workers that still run.

    A worker is gone when its pid no longer exists (its file is deleted) or when its file has
    not been rewritten for :data:`STALE_AFTER` seconds (a reused pid, a frozen process).
    """
    now = time.time()
    for path in sorted(directory.glob("*.prom")):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if not _pid_alive(pid):
            path.unlink(missing_ok=True)
            continue
        try:
            if now - path.stat().st_mtime > STALE_AFTER:
                continue
            text = path.read_text()
        except OSError:
            continue
        yield pid, text


def aggregate(snapshots: list[tuple[int, str]]) -> list[Metric]:
    """Combine the workers' Prometheus texts by the rule of :data:`GAUGES`."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
    for pid, text in snapshots:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
            per_worker = (
                fam.type not in ("counter", "histogram")
                and fam.name not in GAUGES
                and not fam.name.endswith("_created")  # see below
            )
            for sample in fam.samples:
                labels = dict(sample.labels)
                if per_worker:
                    labels["worker"] = str(pid)
                key = (fam.name, sample.name, tuple(sorted(labels.items())))
                values.setdefault(key, []).append(sample.value)
    for (name, sample_name, label_pairs), seen in values.items():
        rule = GAUGES.get(name, "sum") if families[name].type == "gauge" else "sum"
        if name.endswith("_created"):  # a counter's start time: the first worker's
            rule = "min"
        if rule == "max":
            value = max(seen)
        elif rule == "min":
            value = min(seen)
        elif rule == "mean":
            value = sum(seen) / len(seen)
        else:
            value = sum(seen)
        families[name].add_sample(sample_name, dict(label_pairs), value)
    return list(families.values())


class _InProcess(Collector):
    """The metrics of the one worker that runs in this process (none before it starts)."""

    def collect(self) -> Iterator[Metric]:
        for registry in _live[:1]:
            yield from registry.collect()


class SummedMetrics(Collector):
    """The metrics of the live workers that write their files into ``directory``, combined.

    Counters and histograms are summed; gauges follow :data:`GAUGES`. Files of workers that
    are gone are left out (see :func:`_live_snapshots`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        yield from aggregate(list(_live_snapshots(self.directory)))


def app_factory() -> Any:
    """The uvicorn app factory each worker process calls (options come from the env)."""
    options = json.loads(os.environ[ENV])
    configure_from_env()  # a worker process logs as the command asked its parent to
    spec = options["factory"]
    if _checked:
        pipeline: Pipeline = _checked.pop()
    else:
        try:
            pipeline = build_pipeline(spec, load_factory(spec, options["directory"]))
        except Exception as exc:
            if options["workers"] > 1:
                _worker_failed(Path(options["metrics_dir"]), spec, exc)
            raise
    directory = Path(options["metrics_dir"])
    registry = CollectorRegistry()
    shared = None  # one worker: the app's own in-memory store is enough
    if options["idempotency_keys"] > 0 and options["workers"] > 1:
        shared = SharedIdempotencyStore(
            directory / KEYS_FILE, options["idempotency_keys"], options["idempotency_ttl"]
        )
    app = ingest_app(
        pipeline,
        token=options.get("token"),
        max_body=options["max_body"],
        registry=registry,
        name=options.get("name", "http"),
        drain_timeout=options["drain_timeout"],
        dead_letters=options["dead_letters"],
        max_inflight_bytes=options["max_inflight_bytes"],
        protect_metrics=options["protect_metrics"],
        idempotency_keys=options["idempotency_keys"],
        idempotency_ttl=options["idempotency_ttl"],
        body_timeout=options["body_timeout"],
        idempotency_store=shared,
    )
    ingest: Ingest = app.state.sluiceway
    if options["workers"] == 1:
        # One worker runs in the server's own process: read the pipeline at scrape time.
        _live[:] = [registry]
        served = registry
    else:
        served = CollectorRegistry()
        served.register(SummedMetrics(directory))
    snapshots = MetricsFile(directory, registry) if served is not registry else None
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        async with inner(a):
            _drain_on_signals(ingest, asyncio.get_running_loop())
            log.info("worker process %d serving", os.getpid(), extra={"pid": os.getpid()})
            if snapshots is not None:
                snapshots.start()
            try:
                yield
            finally:
                _begin_drain(ingest)
        _log_report(ingest)
        if snapshots is not None:
            snapshots.stop()
        if shared is not None:
            shared.close()

    app.router.lifespan_context = lifespan

    async def metrics(request: Request) -> Response:
        if not ingest.metrics_allowed(request):
            return unauthorised()
        return Response(generate_latest(served), media_type="text/plain; version=0.0.4")

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/metrics"]
    app.router.routes.append(Route("/metrics", metrics))
    return app


def run_uvicorn(
    app: str, host: str, port: int, workers: int, graceful_timeout: float | None
) -> None:
    """Run uvicorn on the app factory ``app`` with this command's lifespan and logging.

    uvicorn re-raises the SIGTERM it handled once it has drained; meanwhile that signal is
    answered by ``_drained``, not by the default handler that would kill this process
    before the caller's clean-up.
    """
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        uvicorn.run(
            app,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            lifespan="on",
            log_level="warning",
            # Configured by the command (--log-format): uvicorn's records go through it.
            log_config=None if os.environ.get(LOG_ENV) else uvicorn.config.LOGGING_CONFIG,
            # uvicorn hands it to asyncio.wait_for, which takes any float
            timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


class MetricsFile:
    """A worker's metrics file in the server's directory, rewritten every ``WRITE_EVERY`` s.

    It is rewritten through the drain too: a fresh file means a live worker (the summing
    side drops stale files and files of processes that are gone).
    """

    def __init__(self, directory: Path, registry: CollectorRegistry) -> None:
        self.path = directory / f"{os.getpid()}.prom"
        self.registry = registry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        """Replace the file with the current metrics (atomically, through a rename)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(generate_latest(self.registry))
        tmp.replace(self.path)

    def start(self) -> None:
        """Write now, then every ``WRITE_EVERY`` seconds until ``stop``."""
        self.write()
        self._thread = threading.Thread(
            target=self._run, name="sluiceway-metrics-writer", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WRITE_EVERY):
            self.write()

    def stop(self) -> None:
        """Stop rewriting and write the final counts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.write()


FAILED_FILE = "factory-failed"


def _worker_failed(directory: Path, spec: str, exc: BaseException) -> NoReturn:
    """A worker whose factory failed: tell the server (a file, then SIGTERM) and exit 2.

    The server then stops the other workers and exits with status 2 and that one line,
    instead of uvicorn starting (and losing) new workers for ever.
    """
    text = str(exc) or type(exc).__name__
    line = f"the factory {spec} failed in worker process {os.getpid()}: {text}"
    first = contextlib.suppress(FileExistsError)  # the first worker to fail tells
    with first, open(directory / FAILED_FILE, "x", encoding="utf-8") as f:
        f.write(line)
    with contextlib.suppress(OSError):
        os.kill(os.getppid(), signal.SIGTERM)
    os._exit(2)


def _begin_drain(ingest: Ingest) -> None:
    """Start the drain now (once), and say so."""
    if ingest.report is None and not ingest.draining().is_set():
        p = ingest.pipeline
        in_flight = 0 if p is None else p.stats().in_flight
        log.info(
            "drain started (pid %d): %d events in flight, drain timeout %ss",
            os.getpid(),
            in_flight,
            ingest.drain_timeout,
            extra={
                "pid": os.getpid(),
                "in_flight": in_flight,
                "drain_timeout": ingest.drain_timeout,
            },
        )
    ingest.begin_drain()


def _drain_on_signals(ingest: Ingest, loop: asyncio.AbstractEventLoop) -> None:
    """On SIGTERM/SIGINT, begin the drain at once, then let uvicorn's handler run.

    uvicorn's own shutdown first waits for open connections; a ``?wait=true`` request would
    hold it until its events are processed. Draining from the signal answers those with 503
    at once. uvicorn restores its predecessors' handlers when it returns.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(_begin_drain, ingest)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def _log_report(ingest: Ingest) -> None:
    report = ingest.report
    if report is None:
        return
    fields: dict[str, Any] = {
        "pid": os.getpid(),
        "accepted": report.accepted,
        "processed": report.processed,
        "dead_lettered": report.dead_lettered,
        "unfinished": report.unfinished,
    }
    if ingest.dead_letters is not None and ingest.pipeline is not None:
        where = f"{ingest.dead_letters.written} dead letters appended to {ingest.dead_letters.path}"
        fields["dead_letters_file"] = str(ingest.dead_letters.path)
        fields["dead_letters_written"] = ingest.dead_letters.written
    else:
        where = "dead letters went to the pipeline's own dead_letter sink"
    log.info(
        "drain finished (pid %d): %d accepted, %d processed, %d dead-lettered "
        "(%d unfinished at the drain timeout); %s",
        os.getpid(),
        report.accepted,
        report.processed,
        report.dead_lettered,
        report.unfinished,
        where,
        extra=fields,
    )


def serve(
    factory: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    metrics_port: int | None = None,
    token: str | None = None,
    max_body: int = 8 * 2**20,
    drain_timeout: float | None = 30.0,
    dead_letters: str | None = DEFAULT_DEAD_LETTERS,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    graceful_timeout: float | None = 60.0,
    protect_metrics: bool = False,
    idempotency_keys: int = 10_000,
    idempotency_ttl: float = 300.0,
    body_timeout: float | None = 30.0,
) -> int:
    """Run the ingest service until SIGTERM/SIGINT; every worker drains before exit.

    The factory is imported with the working directory first on ``sys.path`` and called
    once here, so that a wrong spec fails before any worker starts (:class:`FactoryError`).
    With one worker that pipeline is the one served; with several, each worker process
    calls the factory again and this one is shut down unused.
    """
    if protect_metrics and token is None:
        raise ServeError("--protect-metrics needs a token ($SLUICEWAY_TOKEN or --token-file)")
    if protect_metrics and metrics_port is not None:
        raise ServeError(
            "--metrics-port serves without auth: with --protect-metrics, scrape /metrics on "
            "the main port"
        )
    cwd = os.getcwd()
    checked = build_pipeline(factory, load_factory(factory, cwd))
    if workers == 1:
        _checked[:] = [checked]
    else:
        checked.shutdown(0)
    with tempfile.TemporaryDirectory(prefix="sluiceway-") as directory:
        SharedIdempotencyStore.create(Path(directory) / KEYS_FILE)
        os.environ[ENV] = json.dumps(
            {
                "factory": factory,
                "directory": cwd,
                "metrics_dir": directory,
                "token": token,
                "max_body": max_body,
                "drain_timeout": drain_timeout,
                "dead_letters": None if not dead_letters else os.path.abspath(dead_letters),
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
            registry.register(_InProcess() if workers == 1 else SummedMetrics(Path(directory)))
            server, _ = start_http_server(metrics_port, addr=host, registry=registry)
            metrics_url = f"http://{_netloc(host, server.server_port)}/metrics"
            log.info("serving metrics on %s", metrics_url, extra={"metrics_url": metrics_url})
        url = f"http://{_netloc(host, port)}"
        log.info(
            "listening on %s with %d worker(s), pipeline from %s",
            url,
            workers,
            factory,
            extra={"url": url, "host": host, "port": port, "workers": workers, "factory": factory},
        )
        watching = threading.Event()
        if workers > 1:
            threading.Thread(
                target=_watch_workers,
                args=(watching, Path(directory) / FAILED_FILE),
                name="sluiceway-serve-watch",
                daemon=True,
            ).start()
        try:
            run_uvicorn("sluiceway._serve:app_factory", host, port, workers, graceful_timeout)
        finally:
            watching.set()
            if server is not None:
                server.shutdown()
                server.server_close()
        failed = Path(directory) / FAILED_FILE
        if failed.exists():
            raise ServeError(failed.read_text(encoding="utf-8"))
    return 0


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _watch_workers(done: threading.Event, failed: Path | None = None) -> None:
    """Log each worker process of the multi-worker server that exits (uvicorn replaces it).

    A worker ends by status 0 or by the SIGTERM/SIGINT that uvicorn re-raises after the
    worker's graceful shutdown (and drain): an info line. Any other status or signal
    (SIGKILL, a segfault, the worker killed as hung by uvicorn, a failed start) is a crash:
    an error line. uvicorn then starts another worker, or stops if the worker never started.
    """
    known: dict[int, multiprocessing.process.BaseProcess] = {}
    while not done.wait(0.2):
        for proc in multiprocessing.active_children():
            if proc.pid is not None:
                known.setdefault(proc.pid, proc)
        for pid, proc in list(known.items()):
            if proc.exitcode is not None:
                del known[pid]
                if failed is not None and failed.exists() and proc.exitcode == 2:
                    continue  # its factory failed: the server stops and says so
                _log_exit(pid, proc.exitcode)


def _log_exit(pid: int, code: int) -> None:
    name = None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a signal without a name here
            name = f"signal {-code}"
    how = f"killed by {name}" if name else f"exit status {code}"
    fields = {"pid": pid, "exitcode": code, "signal": name}
    if code == 0 or name in ("SIGTERM", "SIGINT"):
        log.info("worker process %d exited (%s)", pid, how, extra=fields)
    else:
        log.error(
            "worker process %d exited unexpectedly (%s)",
            pid,
            how,
            extra=fields,
        )


def _drained(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM uvicorn re-raises after its graceful shutdown: nothing left to do."""


def serve_command(args: Any) -> int:
    """``sluiceway serve`` with parsed arguments; a bad factory is one line and status 2."""
    try:
        return _serve(args)
    except (FactoryError, ServeError) as exc:
        say(log, logging.ERROR, f"sluiceway serve: error: {exc}")
        return 2


def _token(args: Any) -> str | None:
    """The bearer token: --token-file, else --token (with a warning), else $SLUICEWAY_TOKEN."""
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServeError(
                f"cannot read --token-file {args.token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise ServeError(f"--token-file {args.token_file} is empty")
        return token
    if args.token is not None:
        say(
            log,
            logging.WARNING,
            "sluiceway serve: warning: --token is visible to every local user in the process "
            f"list; prefer ${TOKEN_ENV} or --token-file",
        )
        return str(args.token)
    return os.environ.get(TOKEN_ENV) or None


def _serve(args: Any) -> int:
    if getattr(args, "nats", None) is not None:  # durable ingest: see _durable_serve
        from ._durable_serve import serve_durable_command  # noqa: PLC0415 - needs [nats]

        return serve_durable_command(args, _token(args))
    if args.factory is None:
        raise ServeError("give a pipeline factory (module:function), or --nats URL")
    return serve(
        args.factory,
        host=args.host,
        port=args.port,
        workers=args.workers,
        metrics_port=args.metrics_port,
        token=_token(args),
        protect_metrics=args.protect_metrics,
        idempotency_keys=args.idempotency_keys,
        idempotency_ttl=args.idempotency_ttl,
        body_timeout=args.body_timeout or None,
        max_body=args.max_body,
        drain_timeout=args.drain_timeout,
        dead_letters=args.dead_letters,
        max_inflight_bytes=args.max_inflight_bytes,
        graceful_timeout=args.graceful_timeout,
    )
