"""``sluiceway top URL``: a running pipeline's metrics endpoint, live in the terminal."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["Scrape", "render", "run_top", "scrape", "top_command"]

Scrape = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """Fetch and parse ``url`` (the Prometheus text format) into name -> samples."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    out: Scrape = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), float(sample.value)))
    return out


def _value(data: Scrape, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in data.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def _quantile(data: Scrape, name: str, pipeline: str, q: float) -> float | None:
    buckets = sorted(
        (float("inf") if lab["le"] == "+Inf" else float(lab["le"]), v)
        for lab, v in data.get(f"{name}_bucket", [])
        if lab.get("pipeline") == pipeline
    )
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
        {lab["pipeline"] for lab, _ in data.get("sluiceway_items_processed_total", [])}
    )
    parts: list[Any] = []
    for name in pipelines:
        processed = _value(data, "sluiceway_items_processed_total", pipeline=name)
        before = (
            _value(previous, "sluiceway_items_processed_total", pipeline=name)
            if previous
            else processed
        )
        rate = (processed - before) / seconds if seconds > 0 else 0.0
        refused = _value(data, "sluiceway_items_refused_total", pipeline=name)
        dead = _value(data, "sluiceway_items_dead_lettered_total", pipeline=name)
        p50 = _quantile(data, "sluiceway_priority_latency_seconds", name, 0.5)
        p99 = _quantile(data, "sluiceway_priority_latency_seconds", name, 0.99)
        e2e = _quantile(data, "sluiceway_end_to_end_latency_seconds", name, 0.99)
        head = Text.assemble(
            (f"pipeline {name}  ", "bold"),
            f"{rate:,.0f} items/s  processed {processed:,.0f}  refused {refused:,.0f}  "
            f"dead-lettered {dead:,.0f}  priority p50/p99 <= {_ms(p50)}/{_ms(p99)}  "
            f"end-to-end p99 <= {_ms(e2e)}",
        )
        table = Table(box=None)
        for col in ("shard", "depth", "fill", "", "batch", "breaker"):
            table.add_column(col, justify="right" if col not in ("", "breaker") else "left")
        shards = sorted(
            (lab["shard"], v)
            for lab, v in data.get("sluiceway_queue_depth", [])
            if lab.get("pipeline") == name
        )
        for shard, depth in shards:
            cap = _value(data, "sluiceway_queue_capacity", pipeline=name, shard=shard) or 1.0
            fill = depth / cap
            size = _value(data, "sluiceway_batch_size", pipeline=name, shard=shard)
            state = _value(data, "sluiceway_breaker_state", pipeline=name, shard=shard)
            breaker = {0.0: "closed", 1.0: "half-open", 2.0: "open"}.get(state, "?")
            bar = "#" * round(fill * 30)
            table.add_row(
                shard, f"{depth:,.0f}", f"{fill:.0%}", bar,
                "-" if shard == "priority" else f"{size:.0f}",
                "-" if shard == "priority" else breaker,
            )  # fmt: skip
        parts.extend([head, table])
    if not parts:
        parts.append(Text("no sluiceway metrics at this endpoint yet"))
    return Group(*parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:g} ms"


def run_top(url: str, interval: float = 1.0, once: bool = False) -> int:
    """Refresh every ``interval`` seconds until interrupted (``once``: one frame, exit)."""
    console = Console()
    previous = scrape(url)
    last = time.monotonic()
    if once:
        time.sleep(min(interval, 0.5))
        data = scrape(url)
        console.print(render(data, previous, time.monotonic() - last))
        return 0
    with Live(render(previous, None, 0.0), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                data = scrape(url)
                now = time.monotonic()
                live.update(render(data, previous, now - last))
                previous, last = data, now
        except KeyboardInterrupt:
            return 0


def top_command(args: Any) -> int:
    """``sluiceway top`` with parsed arguments."""
    return run_top(args.url, args.interval, args.once)
