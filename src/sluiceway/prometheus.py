"""Prometheus metrics for sluiceway pipelines (``pip install 'sluiceway[prometheus]'``).

Nothing is registered at import time and nothing is pushed per item: :func:`register` adds
one collector to a registry, and it reads each pipeline's counters when scraped. Several
pipelines in one registry are told apart by the ``pipeline`` label::

    import sluiceway.prometheus as swp

    swp.register(pipeline, name="ingest")        # the default registry
    swp.serve(port=9464)                         # /metrics on 127.0.0.1:9464

The metric reference is ``docs/metrics.md`` (checked against :data:`METRICS` by a test).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client import make_asgi_app as _make_asgi_app
    from prometheus_client import make_wsgi_app as _make_wsgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sluiceway.prometheus needs prometheus-client: pip install 'sluiceway[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from ._core._pipeline import Pipeline

__all__ = [
    "METRICS",
    "add_source",
    "make_asgi_app",
    "make_wsgi_app",
    "register",
    "serve",
    "unregister",
]

BREAKER_STATES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}

# name: (type, labels, help) -- the single source for the collector and docs/metrics.md
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sluiceway_items_accepted": ("counter", ("pipeline", "lane"), "Items admitted."),
    "sluiceway_items_refused": ("counter", ("pipeline", "lane"), "Items refused (backpressure)."),
    "sluiceway_items_processed": ("counter", ("pipeline",), "Items whose handler call succeeded."),
    "sluiceway_items_dead_lettered": (
        "counter",
        ("pipeline", "reason"),
        "Items dead-lettered, by reason.",
    ),
    "sluiceway_queue_depth": (
        "gauge",
        ("pipeline", "shard"),
        "Items queued per shard (shard='priority' for the priority lane).",
    ),
    "sluiceway_queue_capacity": ("gauge", ("pipeline", "shard"), "Capacity per shard and lane."),
    "sluiceway_queue_fill_ratio": (
        "gauge",
        ("pipeline",),
        "In-flight regular items over regular capacity: the autoscaling signal.",
    ),
    "sluiceway_in_flight": ("gauge", ("pipeline",), "Accepted items without an outcome yet."),
    "sluiceway_batch_size": ("gauge", ("pipeline", "shard"), "Current batch size per shard."),
    "sluiceway_batch_duration_seconds": (
        "histogram",
        ("pipeline",),
        "Handler call duration (one call in four is timed).",
    ),
    "sluiceway_batch_duration_ema_seconds": (
        "gauge",
        ("pipeline",),
        "Moving average of handler call duration.",
    ),
    "sluiceway_flushes": ("counter", ("pipeline", "reason"), "Batches handed over, by trigger."),
    "sluiceway_steals": ("counter", ("pipeline", "shard"), "Times a shard gave work away."),
    "sluiceway_items_moved": ("counter", ("pipeline", "shard"), "Items a shard gave away."),
    "sluiceway_breaker_state": (
        "gauge",
        ("pipeline", "shard"),
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
    ),
    "sluiceway_retries": ("counter", ("pipeline",), "Handler calls that retried a batch."),
    "sluiceway_dead_letters_undelivered": (
        "gauge",
        ("pipeline",),
        "Dead letters the sink refused, held in memory.",
    ),
    "sluiceway_priority_latency_seconds": (
        "histogram",
        ("pipeline",),
        "Priority items: submit to handler start.",
    ),
    "sluiceway_end_to_end_latency_seconds": (
        "histogram",
        ("pipeline",),
        "Regular items: oldest item of the batch first seen to handler return (upper bound).",
    ),
}


class _PipelinesCollector(Collector):
    """Reads every registered pipeline of one registry at scrape time."""

    def __init__(self) -> None:
        self.pipelines: dict[str, Pipeline] = {}
        self.extra: list[Callable[[], Iterator[Any]]] = []
        self.lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # collected dynamically: no names are claimed at registration

    def collect(self) -> Iterator[Any]:
        with self.lock:
            pipelines = dict(self.pipelines)
            extra = list(self.extra)
        fams = {name: _family(name) for name in METRICS}
        for name, pipeline in sorted(pipelines.items()):
            _fill(fams, name, pipeline)
        yield from fams.values()
        for source in extra:
            yield from source()


def _family(name: str) -> Any:
    kind, labels, doc = METRICS[name]
    base = name[: -len("_total")] if name.endswith("_total") else name
    if kind == "counter":
        return CounterMetricFamily(base, doc, labels=list(labels))
    if kind == "histogram":
        return HistogramMetricFamily(base, doc, labels=list(labels))
    return GaugeMetricFamily(base, doc, labels=list(labels))


def _fill(fams: dict[str, Any], name: str, p: Pipeline) -> None:
    s = p.stats()
    regular_accepted = s.accepted - s.priority_accepted
    fams["sluiceway_items_accepted"].add_metric([name, "regular"], regular_accepted)
    fams["sluiceway_items_accepted"].add_metric([name, "priority"], s.priority_accepted)
    fams["sluiceway_items_refused"].add_metric([name, "regular"], s.refused - s.priority_refused)
    fams["sluiceway_items_refused"].add_metric([name, "priority"], s.priority_refused)
    fams["sluiceway_items_processed"].add_metric([name], s.processed)
    for reason, n in sorted(p.dead_lettered_by_reason().items()):
        fams["sluiceway_items_dead_lettered"].add_metric([name, reason], n)
    depth = fams["sluiceway_queue_depth"]
    capacity = fams["sluiceway_queue_capacity"]
    size = fams["sluiceway_batch_size"]
    for sh in s.shards:
        label = [name, str(sh.index)]
        depth.add_metric(label, sh.depth)
        capacity.add_metric(label, sh.capacity)
        size.add_metric(label, sh.batch_size)
        fams["sluiceway_steals"].add_metric(label, sh.steals_out)
        fams["sluiceway_items_moved"].add_metric(label, sh.moved_out)
        fams["sluiceway_breaker_state"].add_metric(label, BREAKER_STATES.get(sh.breaker, 0.0))
    depth.add_metric([name, "priority"], s.priority_depth)
    capacity.add_metric([name, "priority"], s.priority_capacity)
    regular_in_flight = s.in_flight - s.priority_in_flight
    fams["sluiceway_queue_fill_ratio"].add_metric(
        [name], min(1.0, max(0, regular_in_flight) / s.capacity)
    )
    fams["sluiceway_in_flight"].add_metric([name], s.in_flight)
    fams["sluiceway_batch_duration_ema_seconds"].add_metric([name], s.batch_time_ema)
    for reason, n in s.flushes.items():
        fams["sluiceway_flushes"].add_metric([name, reason], n)
    fams["sluiceway_retries"].add_metric([name], s.retries)
    fams["sluiceway_dead_letters_undelivered"].add_metric([name], s.dead_letters_undelivered)
    hist = p.histograms()
    for metric, key in (
        ("sluiceway_batch_duration_seconds", "batch_duration"),
        ("sluiceway_priority_latency_seconds", "priority_latency"),
        ("sluiceway_end_to_end_latency_seconds", "end_to_end"),
    ):
        h = hist[key]
        cumulative, buckets = 0, []
        for bound, n in zip([*map(str, h.bounds), "+Inf"], h.counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        fams[metric].add_metric([name], buckets, h.total)


# One collector a registry, forgotten with the registry (ids of dead registries get reused).
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, _PipelinesCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def _collector(registry: CollectorRegistry) -> _PipelinesCollector:
    with _collectors_lock:
        col = _collectors.get(registry)
        if col is None:
            col = _collectors[registry] = _PipelinesCollector()
            registry.register(col)
        return col


def register(
    pipeline: Pipeline, registry: CollectorRegistry | None = None, name: str = "default"
) -> None:
    """Expose ``pipeline``'s metrics in ``registry`` (default: the global one) as ``name``.

    Raises ``ValueError`` if another pipeline is registered there under the same name.
    """
    col = _collector(REGISTRY if registry is None else registry)
    with col.lock:
        current = col.pipelines.get(name)
        if current is not None and current is not pipeline:
            raise ValueError(f"name: a pipeline named {name!r} is already registered")
        col.pipelines[name] = pipeline


def unregister(name: str, registry: CollectorRegistry | None = None) -> None:
    """Stop exposing the pipeline registered as ``name``."""
    col = _collector(REGISTRY if registry is None else registry)
    with col.lock:
        col.pipelines.pop(name, None)


def add_source(
    source: Callable[[], Iterator[Any]], registry: CollectorRegistry | None = None
) -> None:
    """Add more metric families to the same collector (used by the integrations)."""
    col = _collector(REGISTRY if registry is None else registry)
    with col.lock:
        col.extra.append(source)


def serve(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:
    """Serve ``/metrics`` over HTTP in a background thread; binds to loopback by default.

    Returns the server: its port is ``server.server_port``; ``server.shutdown()`` then
    ``server.server_close()`` stop it.
    """
    server, _thread = start_http_server(
        port, addr=addr, registry=REGISTRY if registry is None else registry
    )
    return server


def make_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics, to mount in an existing web app."""
    return _make_asgi_app(REGISTRY if registry is None else registry)


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving the metrics, to mount in an existing web app."""
    return _make_wsgi_app(REGISTRY if registry is None else registry)
