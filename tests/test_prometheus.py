"""Prometheus: a fresh registry per test, values after known traffic, the real endpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import sluiceway as sw
import sluiceway.nats as sluiceway_nats
import sluiceway.prometheus as swp
from sluiceway.testing import FakeClock

from .test_balance import _backlog

ROOT = Path(__file__).resolve().parent.parent


def _poisoned(batch: list[Any]) -> None:
    if any(isinstance(x, str) for x in batch):
        raise ValueError("poison")


def test_values_after_known_traffic() -> None:
    """1,000 accepted, 10 refused, 3 dead-lettered: the scrape says exactly that."""
    registry = CollectorRegistry()
    p = sw.Pipeline(
        _poisoned, shards=4, capacity=1000, batch_size=16, retry=sw.Retry(attempts=1, backoff=0)
    )
    swp.register(p, registry, name="ingest")
    items: list[Any] = [*range(997), "a", "b", "c"]
    assert p.submit_many(items) == 1000
    assert p.submit_many(range(10)) == 0
    p.submit(-1, priority=True)
    p.shutdown()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"pipeline": "ingest", **labels})

    assert value("sluiceway_items_accepted_total", lane="regular") == 1000
    assert value("sluiceway_items_accepted_total", lane="priority") == 1
    assert value("sluiceway_items_refused_total", lane="regular") == 10
    assert value("sluiceway_items_processed_total") == 998
    assert value("sluiceway_items_dead_lettered_total", reason="retries-exhausted") == 3
    assert value("sluiceway_in_flight") == 0
    assert value("sluiceway_queue_capacity", shard="0") == 250
    assert value("sluiceway_queue_capacity", shard="priority") == 100
    assert value("sluiceway_queue_fill_ratio") == 0
    assert value("sluiceway_breaker_state", shard="0") == 0
    assert value("sluiceway_priority_latency_seconds_count") == 1
    assert (value("sluiceway_end_to_end_latency_seconds_count") or 0) >= 900
    assert (value("sluiceway_batch_duration_seconds_count") or 0) > 0
    flushes = sum(
        value("sluiceway_flushes_total", reason=r) or 0
        for r in ("size", "time", "manual", "shutdown")
    )
    assert flushes >= 1000 / 256


def test_steals_are_counted(clock: FakeClock) -> None:
    """A steal shows up as steals and items moved for the giving shard."""
    registry = CollectorRegistry()
    p, h = _backlog(clock, steal=True)
    swp.register(p, registry, name="skewed")
    h.gate.set()
    assert h.wait_done(200)
    p.shutdown()
    steals = registry.get_sample_value(
        "sluiceway_steals_total", {"pipeline": "skewed", "shard": "0"}
    )
    moved = registry.get_sample_value(
        "sluiceway_items_moved_total", {"pipeline": "skewed", "shard": "0"}
    )
    assert steals is not None
    assert steals >= 1
    assert moved is not None
    assert moved > 0


def test_two_pipelines_share_a_registry_by_label() -> None:
    """Several pipelines in one process are told apart by the pipeline label."""
    registry = CollectorRegistry()
    a, b = sw.Pipeline(lambda x: None), sw.Pipeline(lambda x: None)
    swp.register(a, registry, name="a")
    swp.register(b, registry, name="b")
    a.submit_many(range(3))
    b.submit_many(range(5))
    get = registry.get_sample_value
    assert get("sluiceway_items_accepted_total", {"pipeline": "a", "lane": "regular"}) == 3
    assert get("sluiceway_items_accepted_total", {"pipeline": "b", "lane": "regular"}) == 5
    with pytest.raises(ValueError, match="already registered"):
        swp.register(b, registry, name="a")
    swp.unregister("a", registry)
    assert get("sluiceway_items_accepted_total", {"pipeline": "a", "lane": "regular"}) is None
    a.shutdown()
    b.shutdown()


def test_nothing_is_registered_at_import() -> None:
    """Importing the module leaves the default registry without sluiceway metrics."""
    code = (
        "import prometheus_client, sluiceway.prometheus; "
        "print(prometheus_client.REGISTRY.get_sample_value('sluiceway_in_flight', "
        "{'pipeline': 'default'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_http_endpoint_and_top_against_it() -> None:
    """/metrics over real HTTP on loopback; `sluiceway top --once` renders it."""
    registry = CollectorRegistry()
    p = sw.Pipeline(lambda b: None, shards=2).start()
    swp.register(p, registry, name="web")
    server = swp.serve(port=0, registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        p.submit_many(range(100))
        assert p.wait_idle(10)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert 'sluiceway_items_processed_total{pipeline="web"} 100.0' in body
        assert server.server_address[0] == "127.0.0.1"
        top = subprocess.run(
            [sys.executable, "-m", "sluiceway", "top", url, "--once", "--interval", "0.1"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert top.returncode == 0, top.stderr
        assert "pipeline web" in top.stdout
        assert "processed 100" in top.stdout
        assert "priority" in top.stdout
    finally:
        server.shutdown()
        server.server_close()
        p.shutdown()


def test_wsgi_app_serves_the_registry() -> None:
    """The WSGI app answers with the exposition format."""
    registry = CollectorRegistry()
    p = sw.Pipeline(lambda b: None)
    swp.register(p, registry, name="w")
    app = swp.make_wsgi_app(registry)
    status: list[str] = []
    body = b"".join(
        app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
            lambda s, h: status.append(s))
    )  # fmt: skip
    assert status[0].startswith("200")
    assert b"sluiceway_queue_depth" in body
    p.shutdown()


def test_every_dashboard_expression_names_an_exported_metric() -> None:
    """Grafana's panels query only metrics the collector exports."""
    exported = set()
    for name, (kind, _, _) in {**swp.METRICS, **sluiceway_nats.METRICS}.items():
        if kind == "counter":
            exported.add(f"{name}_total")
        elif kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            exported.add(name)
    dashboard = json.loads((ROOT / "dashboards" / "sluiceway.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 8
    for expr in exprs:
        names = set(re.findall(r"\bsluiceway_[a-z_]+", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)


def test_metrics_reference_matches_the_code() -> None:
    """docs/metrics.md lists every metric (the NATS worker's too) with type and labels, only."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = re.findall(r"^\| `(sluiceway_[a-z_]+)` \| (\w+) \| ([^|]*) \|", text, re.M)
    documented = {name: (kind, labels.strip()) for name, kind, labels in rows}
    expected = {}
    for name, (kind, labels, _) in {**swp.METRICS, **sluiceway_nats.METRICS}.items():
        shown = f"{name}_total" if kind == "counter" else name
        expected[shown] = (kind, ", ".join(labels))
    assert documented == expected
