"""The ``sluiceway`` command: ``bench`` (the main job), and the integrations' commands."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence

from ._logging import FORMATS, LEVELS, configure

__all__ = ["main"]


def _csv(choices: Sequence[str]) -> type:
    """An argparse type for a comma-separated subset of ``choices``."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (got {text!r})")
        return items

    return parse  # type: ignore[return-value]


def _switch_interval(text: str) -> float | str | None:
    """``auto``, ``none`` or a positive number of seconds."""
    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "none" else "auto"
    return _positive(float)(text)


def _positive(kind: type[int] | type[float], zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a number above zero (or at least zero if ``zero``)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'} (got {text})")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


DESCRIPTION = """\
sluiceway: high-throughput event pipelines for Python.

Commands: bench (the benchmark workload of docs/workload.md, every engine side by side),
serve (the HTTP ingest service), worker (a NATS JetStream consumer) and top (watch a
pipeline's /metrics live). Each command's --help lists its options."""


def _whole(low: int, high: int | None = None) -> type:
    """An argparse type for a whole number within ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse  # type: ignore[return-value]


def _nats_name(text: str) -> str:
    """An argparse type for a stream or consumer name (no ``.``, ``*``, ``>``, whitespace)."""
    if not text:
        raise argparse.ArgumentTypeError("a NATS name may not be empty")
    if any(c in ".*>" or c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"a NATS name may not contain '.', '*', '>' or whitespace: {text!r}"
        )
    return text


def _seconds(text: str) -> float:
    """An argparse type for a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0 seconds, got {text}")
    return value


def _log_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``: the commands that run a service log to stderr."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="log records at this level and above on stderr (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object a line with time, level, logger, message and "
        "the record's fields (default: %(default)s)",
    )


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    port = _whole(0, 65535)
    serve = sub.add_parser(
        "serve",
        help="run the HTTP ingest service (uvicorn)",
        description="Run the HTTP ingest service. The working directory is put first on "
        "sys.path (as uvicorn and gunicorn do), so `sluiceway serve myapp:make_pipeline` "
        "works from the folder holding myapp.py. The bearer token is read from "
        "$SLUICEWAY_TOKEN, or --token-file. Needs: pip install 'sluiceway[http]'.",
    )
    serve.add_argument(
        "factory",
        nargs="?",
        default=None,
        help="module:function returning a sluiceway.Pipeline, imported from the working "
        "directory first (none with --nats)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    serve.add_argument("--port", type=port, default=8000, help="0..65535 (default 8000)")
    serve.add_argument(
        "--workers",
        type=_whole(1),
        default=1,
        metavar="N",
        help="processes, one pipeline each (default 1)",
    )
    serve.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        metavar="PORT",
        help="also serve the summed /metrics here (no auth)",
    )
    secret = serve.add_mutually_exclusive_group()
    secret.add_argument(
        "--token-file",
        metavar="PATH",
        default=None,
        help="require the bearer token read from this file (whitespace stripped)",
    )
    secret.add_argument(
        "--token",
        default=None,
        help="require this bearer token (visible in the process list: prefer "
        "$SLUICEWAY_TOKEN or --token-file)",
    )
    serve.add_argument(
        "--protect-metrics",
        action="store_true",
        help="require the bearer token on /metrics too",
    )
    serve.add_argument(
        "--max-body",
        type=_whole(1),
        default=8 * 2**20,
        metavar="BYTES",
        help="per request; larger bodies get 413 (default 8 MiB)",
    )
    serve.add_argument(
        "--max-inflight-bytes",
        type=_whole(1),
        default=64 * 2**20,
        metavar="BYTES",
        help="bytes of request bodies read at once per worker; beyond it: 503 (default 64 MiB)",
    )
    serve.add_argument(
        "--body-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="a request body not received within this long gets 408 and its bytes are "
        "released (default 30; 0: no limit)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, drain each pipeline for this long; what is left is "
        "dead-lettered (default 30)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, wait this long for slow clients' requests (default 60)",
    )
    serve.add_argument(
        "--dead-letters",
        default="sluiceway-dead-letters.jsonl",
        metavar="PATH",
        help="JSONL file to which the dead letters of a pipeline using the default "
        "in-memory sink are appended, including events not drained in time (default "
        "./sluiceway-dead-letters.jsonl; '' to keep them in memory only)",
    )
    serve.add_argument(
        "--idempotency-keys",
        type=_whole(0),
        default=10_000,
        metavar="N",
        help="remember the answers to this many recent Idempotency-Keys per worker "
        "(default 10000; 0 turns it off)",
    )
    serve.add_argument(
        "--idempotency-ttl",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="for this long (default 300)",
    )
    _durable_arguments(serve)
    _log_options(serve)


def _durable_arguments(serve: argparse.ArgumentParser) -> None:
    """``serve --nats``: publish to a JetStream stream instead of an in-process pipeline."""
    durable = serve.add_argument_group(
        "durable ingest (--nats)",
        "Publish the events to a JetStream stream and answer 202 only once it has stored "
        "them (docs/topology.md); `sluiceway worker` runs the handler. No factory.",
    )
    durable.add_argument("--nats", default=None, metavar="URL", help="NATS server URL(s)")
    durable.add_argument(
        "--stream", type=_nats_name, default="SLUICEWAY", help="stream (default SLUICEWAY)"
    )
    durable.add_argument(
        "--subject",
        default="sluiceway.events",
        help="subject (default sluiceway.events); X-Priority events go to <subject>.priority",
    )
    durable.add_argument(
        "--max-msgs",
        type=_whole(1),
        default=None,
        metavar="N",
        help="the stream holds at most N envelopes, then refuses (429) (default: unlimited, or "
        "an existing stream's own limit)",
    )
    durable.add_argument(
        "--max-bytes",
        type=_whole(1),
        default=None,
        metavar="BYTES",
        help="the stream holds at most BYTES, then refuses (429) (default: unlimited, or an "
        "existing stream's own limit)",
    )
    durable.add_argument(
        "--duplicate-window",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="a resent envelope (same Idempotency-Key) within this window is stored once "
        "(default 120)",
    )
    durable.add_argument(
        "--ack-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="wait this long for each envelope's ack, then answer 429 (default 5)",
    )
    durable.add_argument(
        "--envelope-events",
        type=_whole(1),
        default=1000,
        metavar="N",
        help="events per envelope at most (default 1000)",
    )


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .bench._config import ENGINES, PHASES, QUICK_SCALE

    parser = argparse.ArgumentParser(
        prog="sluiceway",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser(
        "bench",
        help="run the benchmark workload for every engine, side by side",
        description=(
            "Run the phases of the benchmark workload (docs/workload.md) for sluiceway and its "
            "baselines (a queue.Queue pipeline, an asyncio.Queue pipeline and the no-queueing "
            "ceiling) in one run, and print a table of their figures and ratios."
        ),
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: every phase at {QUICK_SCALE}x its length, under 15 s (default: off)",
    )
    bench.add_argument(
        "--duration-scale",
        type=_positive(float),
        default=1.0,
        metavar="X",
        help="multiply every phase's length by X > 0 (default: %(default)s)",
    )
    bench.add_argument(
        "--repeat",
        type=_positive(int),
        default=1,
        metavar="N",
        help="run the whole selection N times; report the median and the min-max of every "
        "figure (default: %(default)s)",
    )
    bench.add_argument(
        "--engines",
        type=_csv([*ENGINES]),
        default=ENGINES,
        metavar="LIST",
        help=f"comma-separated engines to run (default: {','.join(ENGINES)})",
    )
    bench.add_argument(
        "--phases",
        type=_csv([p.name for p in PHASES]),
        default=None,
        metavar="LIST",
        help=f"comma-separated phases to run (default: {','.join(p.name for p in PHASES)})",
    )
    bench.add_argument(
        "--shards",
        type=_positive(int),
        default=8,
        help="shards (queues and consumer threads) per engine (default: %(default)s)",
    )
    bench.add_argument(
        "--batch-size",
        type=_positive(int),
        default=64,
        help="batch size; sluiceway adapts it within 16..256 (default: %(default)s)",
    )
    bench.add_argument(
        "--handler",
        choices=("cpu", "io"),
        default=None,
        help="run every phase with this handler (default: each phase's own)",
    )
    bench.add_argument(
        "--switch-interval",
        type=_switch_interval,
        default="auto",
        metavar="auto|none|SECONDS",
        help="Pipeline(switch_interval=): auto holds a short GIL switch interval while "
        "priority items arrive, none leaves the interpreter's, SECONDS holds that for the "
        "whole run (default: %(default)s, the Pipeline's default)",
    )
    bench.add_argument(
        "--gc-threshold",
        type=_positive(int, zero=True),
        default=0,
        metavar="N",
        help="Pipeline(gc_threshold=): the gc's first threshold while sluiceway runs; 0 "
        "leaves the interpreter's, as a Pipeline does by default (default: %(default)s)",
    )
    bench.add_argument(
        "--submit-many",
        type=_positive(int, zero=True),
        default=1000,
        metavar="N",
        help="also run saturate-cpu with submit_many in chunks of N; 0 skips it "
        "(default: %(default)s)",
    )
    bench.add_argument(
        "--json", metavar="PATH", help="write the raw figures as JSON (default: none)"
    )
    bench.add_argument(
        "--report", metavar="PATH", help="write an HTML report with plots (default: none)"
    )
    bench.add_argument(
        "--no-live",
        action="store_true",
        help="no live display; it is drawn only when stderr is a terminal (default: off)",
    )

    _serve_parser(sub)

    worker = sub.add_parser(
        "worker",
        help="consume a NATS JetStream stream into a pipeline",
        description="Consume a NATS JetStream stream into the pipeline that factory "
        "(module:function) returns. "
        "Needs: pip install 'sluiceway[nats]'.",
    )
    worker.add_argument("factory", help="module:function returning a sluiceway.Pipeline")
    worker.add_argument("--nats", required=True, help="server URL, e.g. nats://127.0.0.1:4222")
    worker.add_argument("--stream", type=_nats_name, default="SLUICEWAY")
    worker.add_argument("--subject", default="sluiceway.events")
    worker.add_argument("--durable", type=_nats_name, default="sluiceway")
    worker.add_argument(
        "--ack-wait", type=_positive(float), default=30.0, help="seconds before redelivery"
    )
    worker.add_argument("--max-deliver", type=_whole(1), default=5)
    worker.add_argument(
        "--metrics-port", type=_whole(0, 65535), default=None, help="serve /metrics here"
    )
    worker.add_argument(
        "--connect-timeout",
        type=_positive(float),
        default=10.0,
        help="seconds to keep trying to reach the server at start-up before exiting with an "
        "error (default 10); once connected it reconnects for ever",
    )
    _log_options(worker)

    top = sub.add_parser(
        "top",
        help="watch a pipeline's /metrics endpoint live",
        description="Watch a pipeline's Prometheus endpoint live in the terminal. "
        "Needs: pip install 'sluiceway[cli,prometheus]'.",
    )
    top.add_argument("url", help="the metrics URL, e.g. http://127.0.0.1:9464/metrics")
    top.add_argument(
        "--interval",
        type=_positive(float),
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default: %(default)s)",
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit (default: off)")
    return parser


# command -> (module, function, extra to install if the module's imports fail)
COMMANDS = {
    "bench": ("sluiceway.bench._cli", "bench_command", "cli"),
    "serve": ("sluiceway._serve", "serve_command", "http"),
    "worker": ("sluiceway.nats", "worker_command", "nats"),
    "top": ("sluiceway._top", "top_command", "cli,prometheus"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sluiceway`` command."""
    args = _parser().parse_args(argv)
    if getattr(args, "log_level", None) is not None:
        configure(args.log_level, args.log_format)
    module, function, extra = COMMANDS[args.command]
    try:
        command = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        print(
            f"sluiceway {args.command} needs the module {_missing_module(exc)!r}: "
            f"pip install 'sluiceway[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return int(command(args))


def _missing_module(exc: BaseException) -> str:
    """The module whose absence caused ``exc`` (an integration re-raises with a cause)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    name = getattr(exc, "name", None)
    return str(name) if name else str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
