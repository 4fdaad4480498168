"""What Prometheus costs: saturate-cpu scraped every second against unscraped, one run.

The collector is registered and ``/metrics`` fetched over loopback every second; plain and
scraped runs alternate.

Run: ``.venv/bin/python benchmarks/metrics_overhead.py [--seconds S] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import urllib.request

from prometheus_client import CollectorRegistry

import sluiceway as sw
import sluiceway.prometheus as swp
from sluiceway.bench._workload import Sink, produce


def run(scraped: bool, seconds: float) -> float:
    """saturate-cpu for ``seconds``; with ``scraped``, /metrics is fetched every second."""
    sink = Sink("cpu")
    p = sw.Pipeline(
        sink.batch, priority_handler=sink.priority, switch_interval=0.0005, gc_threshold=10_000
    ).start()
    stop = threading.Event()
    scraper = None
    server = None
    if scraped:
        registry = CollectorRegistry()
        swp.register(p, registry, name="bench")
        server = swp.serve(port=0, registry=registry)
        url = f"http://127.0.0.1:{server.server_port}/metrics"

        def scrape() -> None:
            while not stop.wait(1.0):
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert b"sluiceway_items_processed_total" in response.read()

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
    produced = produce(p.submit, seconds, None)
    rate = sink.processed() / produced.seconds
    stop.set()
    if scraper is not None:
        scraper.join()
    if server is not None:
        server.shutdown()
        server.server_close()
    p.shutdown()
    return rate


def main() -> None:
    """Alternate plain and scraped runs; print medians and their ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plain, scraped = [], []
    for _ in range(args.rounds):
        plain.append(run(False, args.seconds))
        scraped.append(run(True, args.seconds))
    a, b = statistics.median(plain), statistics.median(scraped)
    print(f"without metrics: median {a / 1e6:.3f} M ev/s  {[round(x / 1e6, 3) for x in plain]}")
    print(f"scraped each s:  median {b / 1e6:.3f} M ev/s  {[round(x / 1e6, 3) for x in scraped]}")
    print(f"ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
