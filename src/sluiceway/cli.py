"""The ``sluiceway`` command: ``bench`` (the main job), and the integrations' commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def _parser() -> argparse.ArgumentParser:
    from .bench._config import ENGINES, PHASES

    parser = argparse.ArgumentParser(prog="sluiceway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser(
        "bench",
        help="run the seed workload for every engine, side by side",
        description="Run shared/WORKLOAD.md's phases for sluiceway and its baselines.",
    )
    bench.add_argument("--quick", action="store_true", help="a smoke run (under 15 s)")
    bench.add_argument(
        "--duration-scale", type=float, default=1.0, help="multiply every phase's length"
    )
    bench.add_argument("--engines", type=_csv([*ENGINES]), default=ENGINES)
    bench.add_argument("--phases", type=_csv([p.name for p in PHASES]), default=None)
    bench.add_argument("--shards", type=int, default=8)
    bench.add_argument("--batch-size", type=int, default=64)
    bench.add_argument("--handler", choices=("cpu", "io"), default=None)
    bench.add_argument(
        "--switch-interval",
        type=float,
        default=0.0003,
        help="sys.setswitchinterval while sluiceway runs (seconds)",
    )
    bench.add_argument(
        "--gc-threshold",
        type=int,
        default=3_000,
        help="gc threshold 0 while sluiceway runs (0: leave the interpreter's default)",
    )
    bench.add_argument(
        "--submit-many",
        type=int,
        default=1000,
        metavar="N",
        help="also run saturate-cpu with submit_many in chunks of N (0: skip)",
    )
    bench.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    bench.add_argument("--report", metavar="PATH", help="write an HTML report with plots")
    bench.add_argument("--no-live", action="store_true", help="no live display")
    serve = sub.add_parser("serve", help="run the HTTP ingest service (uvicorn)")
    serve.add_argument("factory", help="module:function returning a sluiceway.Pipeline")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes, one pipeline each")
    serve.add_argument("--metrics-port", type=int, default=None, help="summed /metrics here")
    serve.add_argument("--token", default=None, help="require this bearer token")
    serve.add_argument("--max-body", type=int, default=8 * 2**20, help="bytes per request")

    worker = sub.add_parser("worker", help="consume a NATS JetStream stream into a pipeline")
    worker.add_argument("factory", help="module:function returning a sluiceway.Pipeline")
    worker.add_argument("--nats", required=True, help="server URL, e.g. nats://127.0.0.1:4222")
    worker.add_argument("--stream", default="SLUICEWAY")
    worker.add_argument("--subject", default="sluiceway.events")
    worker.add_argument("--durable", default="sluiceway")
    worker.add_argument("--ack-wait", type=float, default=30.0, help="seconds before redelivery")
    worker.add_argument("--max-deliver", type=int, default=5)
    worker.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    worker.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to keep trying to reach the server at start-up before exiting with an "
        "error (default 10); once connected it reconnects for ever",
    )

    top = sub.add_parser("top", help="watch a pipeline's /metrics endpoint live")
    top.add_argument("url", help="e.g. http://127.0.0.1:9464/metrics")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
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
    module, function, extra = COMMANDS[args.command]
    try:
        command = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        print(f"sluiceway {args.command} needs: pip install 'sluiceway[{extra}]' ({exc})",
              file=sys.stderr)  # fmt: skip
        return 2
    return int(command(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
