"""``sluiceway serve`` metrics across workers: what sums, what does not, and dead workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sluiceway as sw
import sluiceway.prometheus as swp
from sluiceway._serve import aggregate

from .test_serve import NDJSON, SCRIPT, free_port, ndjson, user_env, wait_up

FULLAPP = """
import time

import sluiceway as sw


def make():
    def handler(batch):
        time.sleep(1.0)  # 16 events a second per worker: the queues stay full

    return sw.Pipeline(
        handler, shards=2, batch_size=8, capacity=64, max_delay=0.001, adaptive=False
    )
"""

FASTAPP = """
import sluiceway as sw


def make():
    return sw.Pipeline(lambda batch: None, shards=2, max_delay=0.001)
"""


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Servers started by a test; SIGTERM (then kill) whatever still runs at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.communicate()


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """``(sample name, labels, value)`` of every sample in a Prometheus text."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield s.name, dict(s.labels), s.value


def value(text: str, name: str) -> float:
    """The sum of the samples called ``name`` (every label set) in a Prometheus text."""
    return sum(v for n, _, v in samples(text) if n == name)


def worker_files(tmp: Path) -> dict[int, str]:
    """Each worker's own metrics file in the server's temporary directory, by pid."""
    out = {}
    for path in tmp.glob("sluiceway-*/*.prom"):
        try:
            out[int(path.stem)] = path.read_text()
        except OSError:  # replaced while we read: the next round sees it
            continue
    return out


def launch(
    cwd: Path, app: str, tmp: Path, args: list[str]
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start ``sluiceway serve app:make`` with ``$TMPDIR=tmp`` and --metrics-port.

    Returns the process, the main URL and the parent's metrics URL.
    """
    (cwd / f"{app}.py").write_text({"fullapp": FULLAPP, "fastapp": FASTAPP}[app])
    tmp.mkdir()
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen(
        [SCRIPT, "serve", f"{app}:make", "--port", str(port), "--metrics-port",
         str(metrics_port), "--dead-letters", str(cwd / "dead.jsonl"), *args],
        cwd=cwd, env={**user_env(), "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return proc, url, f"http://127.0.0.1:{metrics_port}/metrics"


def test_four_workers_report_a_fill_ratio_within_0_1_and_batch_sizes_within_bounds(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """Four half-full (or fuller) workers: the fill ratio stays a ratio, batch sizes bounded.

    The workers' own files add up to a fill ratio above 1.5; the combined ratio is the
    fullest worker's (at most 1), and each shard's batch size is at most the max batch (8),
    on the main port as on --metrics-port.
    """
    proc, url, metrics_url = launch(
        tmp_path, "fullapp", tmp_path / "tmp", ["--workers", "4", "--drain-timeout", "0.5"]
    )
    stop.append(proc)
    deadline = time.monotonic() + 30
    own: dict[int, str] = {}
    while True:  # a new connection each: the kernel spreads them over the workers
        httpx.post(f"{url}/v1/events", content=ndjson(range(48)), headers=NDJSON)
        own = worker_files(tmp_path / "tmp")
        ratios = [value(text, "sluiceway_queue_fill_ratio") for text in own.values()]
        if len(own) == 4 and sum(ratios) > 1.5:
            break
        assert time.monotonic() < deadline, f"the workers did not fill: {ratios}"
        time.sleep(0.05)
    for body in (httpx.get(f"{url}/metrics").text, httpx.get(metrics_url).text):
        ratio = value(body, "sluiceway_queue_fill_ratio")
        assert 0 < ratio <= 1
        sizes = [v for n, _, v in samples(body) if n == "sluiceway_batch_size"]
        assert len(sizes) == 2  # one per shard, not one per shard and worker
        assert all(0 < size <= 8 for size in sizes), sizes
        states = [v for n, _, v in samples(body) if n == "sluiceway_breaker_state"]
        assert states == [0.0, 0.0]  # closed
        regular = [
            v
            for n, labels, v in samples(body)
            if n == "sluiceway_queue_capacity" and labels["shard"] != "priority"
        ]
        assert sum(regular) == 4 * 64  # an amount: summed over the workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_killed_workers_snapshot_leaves_the_sum(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """After SIGKILL of one of two workers, the summed counters are the survivor's alone."""
    proc, url, metrics_url = launch(tmp_path, "fastapp", tmp_path / "tmp", ["--workers", "2"])
    stop.append(proc)
    accepted: dict[int, float] = {}
    deadline = time.monotonic() + 30
    while len([n for n in accepted.values() if n > 0]) < 2:  # both workers took events
        resp = httpx.post(f"{url}/v1/events?wait=true", content=ndjson(range(10)), headers=NDJSON)
        assert resp.json()["processed"] == 10
        time.sleep(0.6)  # one write period: the files hold the counts
        own = worker_files(tmp_path / "tmp")
        accepted = {pid: value(text, "sluiceway_items_accepted_total") for pid, text in own.items()}
        assert time.monotonic() < deadline, f"one worker took every connection: {accepted}"
    before = value(httpx.get(metrics_url).text, "sluiceway_items_accepted_total")
    assert before == sum(accepted.values())
    victim, survivor = sorted(accepted)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (
        value(httpx.get(metrics_url).text, "sluiceway_items_accepted_total") != accepted[survivor]
    ):
        assert time.monotonic() < deadline, "the killed worker's counts stayed in the sum"
        time.sleep(0.1)
    assert not list((tmp_path / "tmp").glob(f"sluiceway-*/{victim}.prom"))  # deleted
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_one_worker_is_read_at_scrape_time_and_leaves_no_temporary_directory(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """With one worker, /metrics and --metrics-port show an outcome as soon as it is answered.

    SIGTERM then exits 0 and removes the server's temporary directory.
    """
    tmp = tmp_path / "tmp"
    proc, url, metrics_url = launch(tmp_path, "fastapp", tmp, [])
    stop.append(proc)
    for n in range(1, 6):
        resp = httpx.post(f"{url}/v1/events?wait=true", content=ndjson(range(10)), headers=NDJSON)
        assert resp.json()["processed"] == 10
        for where in (f"{url}/metrics", metrics_url):
            assert value(httpx.get(where).text, "sluiceway_items_processed_total") == 10 * n
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert list(tmp.iterdir()) == []


def test_every_gauge_has_a_documented_rule() -> None:
    """Each gauge of the pipeline and the NATS worker combines by a rule docs/metrics.md names.

    (A gauge without one would get a per-worker label: right for a user's own gauge, wrong
    for ours.)
    """
    import sluiceway.nats as sluiceway_nats
    import sluiceway.prometheus as swp
    from sluiceway._serve import GAUGES

    gauges = {
        name
        for name, (kind, _, _) in {**swp.METRICS, **sluiceway_nats.METRICS}.items()
        if kind == "gauge"
    }
    assert gauges == set(GAUGES)
    text = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    section = text.split("## Several workers", 1)[1].split("\n## ", 1)[0]
    headings = {"sum": "**Summed**", "max": "**Maximum**", "mean": "**Mean**", "min": "**Minimum**"}
    items = {h: part for part in section.split("\n- ") for h in headings.values() if h in part}
    for name, rule in GAUGES.items():
        assert f"`{name}`" in items[headings[rule]], (name, rule)


def test_a_stale_or_orphaned_snapshot_is_left_out(tmp_path: Path) -> None:
    """A file whose pid is gone is deleted; one not rewritten for STALE_AFTER s is skipped.

    Real pids: this process (alive, fresh and stale files) and a child that has exited.
    """
    from sluiceway._serve import STALE_AFTER, SummedMetrics

    line = '# TYPE sluiceway_in_flight gauge\nsluiceway_in_flight{pipeline="http"} %d\n'
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    dead_pid = int(gone.stdout)
    (tmp_path / f"{dead_pid}.prom").write_text(line % 5)
    (tmp_path / f"{os.getpid()}.prom").write_text(line % 7)
    collector = SummedMetrics(tmp_path)

    def in_flight() -> float:
        return sum(s.value for f in collector.collect() for s in f.samples)

    assert in_flight() == 7  # the exited child's 5 is not counted
    assert not (tmp_path / f"{dead_pid}.prom").exists()
    old = time.time() - STALE_AFTER - 1
    os.utime(tmp_path / f"{os.getpid()}.prom", (old, old))  # a frozen worker
    assert in_flight() == 0


def test_four_real_snapshots_combine_by_meaning() -> None:
    """Four real pipelines' snapshots: amounts sum, fill ratio and breaker the worst, sizes mean.

    Three pipelines hold 16, 32 and 48 of 64 slots (a blocked handler); the fourth has an
    open breaker on one shard. A gauge of the user's own keeps one sample per worker.
    """
    gate = threading.Event()

    def held(batch: list[Any]) -> None:
        gate.wait(30)

    def down(batch: list[Any]) -> None:
        raise RuntimeError("down")

    common: dict[str, Any] = {"shards": 2, "capacity": 64, "max_delay": 0.001, "adaptive": False}
    pipelines = [sw.Pipeline(held, batch_size=size, **common) for size in (4, 8, 16)]
    breaker = sw.Breaker(failures=1, cooldown=1000)
    broken = sw.Pipeline(down, batch_size=1, retry=sw.Retry(attempts=1), breaker=breaker, **common)
    pipelines.append(broken)
    try:
        for p, n in zip(pipelines, (16, 32, 48, 1), strict=True):
            p.start()
            assert p.submit_many(range(n)) == n
        deadline = time.monotonic() + 10
        while "open" not in [s.breaker for s in broken.stats().shards]:
            assert time.monotonic() < deadline, "the breaker did not open"
            time.sleep(0.01)
        snapshots = []
        for pid, p in enumerate(pipelines, start=100):
            registry = CollectorRegistry()
            swp.register(p, registry, name="http")
            Gauge("myapp_temperature", "A gauge of the app's own.", registry=registry).set(pid)
            snapshots.append((pid, generate_latest(registry).decode()))
        combined = generate_latest_of(aggregate(snapshots))
    finally:
        gate.set()
        for p in pipelines:
            p.shutdown(10)
    own = [list(samples(text)) for _, text in snapshots]

    def each(name: str, shard: str | None = None) -> list[float]:
        return [
            v
            for worker in own
            for n, labels, v in worker
            if n == name and (shard is None or labels.get("shard") == shard)
        ]

    assert value(combined, "sluiceway_queue_fill_ratio") == max(each("sluiceway_queue_fill_ratio"))
    assert value(combined, "sluiceway_queue_fill_ratio") == 48 / 64
    assert value(combined, "sluiceway_in_flight") == sum(each("sluiceway_in_flight")) >= 96
    assert value(combined, "sluiceway_items_accepted_total") == 16 + 32 + 48 + 1
    assert value(combined, "sluiceway_batch_duration_seconds_count") == sum(
        each("sluiceway_batch_duration_seconds_count")
    )
    for shard in ("0", "1"):
        sizes = each("sluiceway_batch_size", shard)
        shown = [
            v
            for n, la, v in samples(combined)
            if n == "sluiceway_batch_size" and la["shard"] == shard
        ]
        assert shown == [sum(sizes) / 4]
        states = each("sluiceway_breaker_state", shard)
        worst = [
            v
            for n, la, v in samples(combined)
            if n == "sluiceway_breaker_state" and la["shard"] == shard
        ]
        assert worst == [max(states)]
    assert 2.0 in [v for n, _, v in samples(combined) if n == "sluiceway_breaker_state"]  # open
    temperatures = {la["worker"]: v for n, la, v in samples(combined) if n == "myapp_temperature"}
    assert temperatures == {"100": 100.0, "101": 101.0, "102": 102.0, "103": 103.0}


def generate_latest_of(families: list[Any]) -> str:
    """The Prometheus text of metric families (as ``/metrics`` serves them)."""

    class Fixed:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry()
    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_a_counters_created_time_is_the_earliest_not_a_sum() -> None:
    """prometheus_client counters carry ``_created`` (a Unix time): combined, the earliest."""
    snapshots = []
    for pid, created in ((1, 1000.0), (2, 2000.0)):
        registry = CollectorRegistry()
        Counter("myapp_things", "Things.", registry=registry).inc(pid)
        text = generate_latest(registry).decode()
        text = re.sub(r"^(myapp_things_created) \S+$", rf"\1 {created}", text, flags=re.M)
        snapshots.append((pid, text))
    combined = generate_latest_of(aggregate(snapshots))
    assert value(combined, "myapp_things_total") == 3
    assert value(combined, "myapp_things_created") == 1000.0
