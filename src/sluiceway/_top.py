"""``sluiceway top URL``: a running pipeline's metrics endpoint, live in the terminal.

A fetch that fails (no answer, an HTTP error, a body that is not Prometheus text, metrics
that cannot be rendered) never ends the live view: it shows "unreachable, retrying" with the
reason and tries again every interval. ``--once`` prints that reason as one line and exits
with status 1.
"""

from __future__ import annotations

import http.client
import math
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._errors import ConfigError, SluicewayError

__all__ = [
    "Scrape",
    "ScrapeError",
    "check_url",
    "render",
    "run_top",
    "scrape",
    "top_command",
]

Scrape = dict[str, list[tuple[dict[str, str], float]]]

_CONTENT_TYPES = ("text/plain", "application/openmetrics-text")


class ScrapeError(SluicewayError):
    """The metrics endpoint could not be read; the message says why, in a few words."""


def check_url(url: str) -> str:
    """``url`` with ``http://`` added when it has no scheme; ``sw.ConfigError`` if not HTTP."""
    full = url if "://" in url else f"http://{url}"
    try:
        parts = urllib.parse.urlsplit(full)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ConfigError("url", f"{url}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError("url", f"{url}: the scheme must be http:// or https://")
    if not parts.hostname:
        raise ConfigError("url", f"{url}: no host")
    return full


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """Fetch and parse ``url`` (the Prometheus text format) into name -> samples.

    Raises :class:`ScrapeError` for every way that can fail.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            ctype = response.headers.get_content_type()
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ScrapeError(_reason(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ScrapeError(_reason(exc)) from exc
    if ctype not in _CONTENT_TYPES:
        raise ScrapeError(f"the answer is {ctype}, not Prometheus metrics")
    out: Scrape = defaultdict(list)
    try:
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for sample in family.samples:
                out[sample.name].append((dict(sample.labels), float(sample.value)))
    except Exception as exc:
        raise ScrapeError(f"the answer is not the Prometheus text format ({exc})") from exc
    return out


def _reason(exc: object) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, BaseException):
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return str(exc)


def _value(data: Scrape, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in data.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def _quantile(data: Scrape, name: str, pipeline: str, q: float) -> float | None:
    buckets = []
    for lab, v in data.get(f"{name}_bucket", []):
        if lab.get("pipeline") != pipeline or "le" not in lab or not math.isfinite(v):
            continue
        try:
            buckets.append((float(lab["le"]), v))  # float("+Inf") is inf
        except ValueError:
            continue
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return None  # pragma: no cover


def render(data: Scrape, previous: Scrape | None, seconds: float) -> Group:
    """One frame: a table a pipeline, a row a shard."""
    pipelines = sorted(
        {lab.get("pipeline", "?") for lab, _ in data.get("sluiceway_items_processed_total", [])}
    )
    parts: list[Any] = []
    for name in pipelines:
        processed = _value(data, "sluiceway_items_processed_total", pipeline=name)
        before = (
            _value(previous, "sluiceway_items_processed_total", pipeline=name)
            if previous
            else processed
        )
        # A restarted endpoint counts from zero again: no negative rates.
        rate = max(0.0, processed - before) / seconds if seconds > 0 else 0.0
        refused = _value(data, "sluiceway_items_refused_total", pipeline=name)
        dead = _value(data, "sluiceway_items_dead_lettered_total", pipeline=name)
        p50 = _quantile(data, "sluiceway_priority_latency_seconds", name, 0.5)
        p99 = _quantile(data, "sluiceway_priority_latency_seconds", name, 0.99)
        e2e = _quantile(data, "sluiceway_end_to_end_latency_seconds", name, 0.99)
        head = Text.assemble(
            (f"pipeline {name}  ", "bold"),
            f"{_n(rate)} items/s  processed {_n(processed)}  refused {_n(refused)}  "
            f"dead-lettered {_n(dead)}  priority p50/p99 <= {_ms(p50)}/{_ms(p99)}  "
            f"end-to-end p99 <= {_ms(e2e)}",
        )
        table = Table(box=None)
        for col in ("shard", "depth", "fill", "", "batch", "breaker"):
            table.add_column(col, justify="right" if col not in ("", "breaker") else "left")
        shards = sorted(
            (lab.get("shard", "?"), v)
            for lab, v in data.get("sluiceway_queue_depth", [])
            if lab.get("pipeline") == name
        )
        for shard, depth in shards:
            cap = _value(data, "sluiceway_queue_capacity", pipeline=name, shard=shard) or 1.0
            fill = depth / cap
            size = _value(data, "sluiceway_batch_size", pipeline=name, shard=shard)
            state = _value(data, "sluiceway_breaker_state", pipeline=name, shard=shard)
            breaker = {0.0: "closed", 1.0: "half-open", 2.0: "open"}.get(state, "?")
            known = math.isfinite(fill)
            bar = "#" * round(min(max(fill, 0.0), 1.0) * 30) if known else ""
            table.add_row(
                shard, _n(depth), f"{fill:.0%}" if known else "?", bar,
                "-" if shard == "priority" else _n(size),
                "-" if shard == "priority" else breaker,
            )  # fmt: skip
        parts.extend([head, table])
    if not parts:
        parts.append(Text("no sluiceway metrics at this endpoint yet"))
    return Group(*parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:g} ms"


def _n(value: float) -> str:
    """A count for the table; ``?`` for NaN or an infinity."""
    return f"{value:,.0f}" if math.isfinite(value) else "?"


def _unreachable(url: str, error: ScrapeError, interval: float, frame: Any) -> Group:
    """The live view while the endpoint fails: the reason, then the last good frame."""
    status = Text.assemble(
        (f"{url} unreachable, retrying every {interval:g}s: ", "bold red"), str(error)
    )
    return Group(status, frame) if frame is not None else Group(status)


def run_top(url: str, interval: float = 1.0, once: bool = False) -> int:
    """Refresh every ``interval`` seconds until interrupted (``once``: one frame, exit).

    The live view rides out every fetch failure; ``once`` prints one line on stderr and
    returns 1 when the endpoint cannot be read.
    """
    console = Console()
    if once:
        try:
            previous = scrape(url)
            last = time.monotonic()
            time.sleep(min(interval, 0.5))
            data = scrape(url)
        except ScrapeError as exc:
            print(f"sluiceway top: {url} unreachable: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        try:
            once_frame = render(data, previous, time.monotonic() - last)
        except Exception as exc:  # noqa: BLE001 - metrics this version cannot show
            print(f"sluiceway top: {url} unreadable: {_reason(exc)}", file=sys.stderr)
            return 1
        console.print(once_frame)
        return 0
    frame: Any = None
    previous_data: Scrape | None = None
    last = time.monotonic()
    with Live(Text(f"reading {url}"), console=console, refresh_per_second=4) as live:
        try:
            while True:
                try:
                    data = scrape(url)
                    now = time.monotonic()
                    try:
                        shown = render(data, previous_data, now - last)
                    except Exception as exc:  # metrics this version cannot show
                        raise ScrapeError(f"unreadable: {_reason(exc)}") from exc
                except ScrapeError as exc:
                    live.update(_unreachable(url, exc, interval, frame))
                    previous_data = None  # the endpoint may restart from zero
                else:
                    frame = shown
                    live.update(frame)
                    previous_data, last = data, now
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0


def top_command(args: Any) -> int:
    """``sluiceway top`` with parsed arguments."""
    try:
        url = check_url(args.url)
    except ConfigError as exc:
        print(f"sluiceway top: {str(exc).removeprefix('url: ')}", file=sys.stderr)
        return 2
    if not args.interval > 0:
        print(f"sluiceway top: --interval must be above 0 (got {args.interval:g})",
              file=sys.stderr)  # fmt: skip
        return 2
    return run_top(url, args.interval, args.once)
