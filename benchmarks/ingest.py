"""HTTP ingest throughput against in-process ``submit_many``, in one run.

Run: ``.venv/bin/python benchmarks/ingest.py [--seconds S]``. Starts ``sluiceway serve
benchmarks.ingest_app:factory`` (one worker) on loopback, drives it from a separate load
generator process posting NDJSON bodies of 1,000 events over keep-alive connections, and
compares events/s with ``submit_many`` of the same parsed events in this process. Then it
slows the handler down and checks that the service answers 429 (not timeouts or errors).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 1000


def _events(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "key": f"key-{i & 1023:04d}", "payload": "x" * 64} for i in range(n)]


def _load(url: str, seconds: float, threads: int, out: Any) -> None:
    """The load generator (its own process): post bodies, resend refused suffixes."""
    lines = [orjson.dumps(e) for e in _events(EVENTS)]
    counts: dict[str, float] = {"events": 0, "r202": 0, "r429": 0, "other": 0, "errors": 0}
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(timeout=10.0) as http:
            while time.perf_counter() < end:
                left = lines
                while left and time.perf_counter() < end:
                    try:
                        r = http.post(url, content=b"\n".join(left),
                                      headers={"content-type": "application/x-ndjson"})  # fmt: skip
                    except httpx.HTTPError:
                        with lock:
                            counts["errors"] += 1
                        continue
                    k = r.json().get("accepted", 0) if r.status_code in (202, 429) else 0
                    with lock:
                        counts["events"] += k
                        key = {202: "r202", 429: "r429"}.get(r.status_code, "other")
                        counts[key] += 1
                    left = left[k:]
                    if r.status_code == 429:
                        time.sleep(0.001)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    counts["seconds"] = time.perf_counter() - start
    out.put(counts)


def _serve(port: int, delay: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INGEST_DELAY": str(delay)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "serve", "benchmarks.ingest_app:factory",
         "--port", str(port)],
        env=env, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def _http_rate(seconds: float, delay: float) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _serve(port, delay)
    try:
        out: Any = multiprocessing.Queue()
        loader = multiprocessing.Process(
            target=_load, args=(f"http://127.0.0.1:{port}/v1/events", seconds, 4, out)
        )
        loader.start()
        counts: dict[str, float] = out.get()
        loader.join()
    finally:
        proc.terminate()
        proc.wait(60)
    return counts


def _in_process_rate(seconds: float) -> float:
    sys.path.insert(0, str(ROOT))
    from benchmarks.ingest_app import factory

    events = _events(EVENTS)
    p = factory().start()
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        batch = [dict(e) for e in events]  # fresh dicts, as parsing would make
        k = 0
        while k < len(batch):
            got = p.submit_many(batch[k:])
            k += got
            if not got:
                time.sleep(0.0005)
        n += len(batch)
    rate = n / (time.perf_counter() - start)
    p.shutdown()
    return rate


def main() -> None:
    """Measure, compare, print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    local = _in_process_rate(args.seconds)
    http = _http_rate(args.seconds, 0.0)
    rate = http["events"] / http["seconds"]
    print(f"in-process submit_many: {local / 1e3:8.1f} k ev/s")
    answers = f"202s {http['r202']:.0f}  429s {http['r429']:.0f}  errors {http['errors']:.0f}"
    print(f"HTTP ingest, 1 worker:  {rate / 1e3:8.1f} k ev/s  ({rate / local:.2f}x)  {answers}")
    slow = _http_rate(args.seconds, 0.05)
    print(f"slowed handler (50 ms a batch): 429s {slow['r429']:.0f}  202s {slow['r202']:.0f}  "
          f"other {slow['other']:.0f}  errors/timeouts {slow['errors']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
