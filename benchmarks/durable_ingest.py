"""Durable ingest end to end against in-process ingest, in one run.

Run: ``.venv/bin/python benchmarks/durable_ingest.py [--seconds S] [--workers W]``.

- in-process: a load process -> ``sluiceway serve benchmarks.durable_app:factory`` (the
  handler runs in the ingest process; a 202 means "in this process's memory");
- durable: a load process -> ``sluiceway serve --nats`` -> a JetStream stream (a real
  ``nats-server -js``, loopback, temporary store) -> ``W`` ``sluiceway worker`` processes
  running the same handler (a 202 means "stored in the stream").

The load process posts NDJSON bodies of 1,000 events from 4 threads over keep-alive
connections for ``S`` seconds, each with an ``Idempotency-Key`` and resending a refused
suffix as ``sw.Client`` does; every event carries ``t``, the wall-clock time of its POST.
Reported per mode: accepted events/s (at the client), end-to-end events/s (handled events
over the time from the first POST to the last handled event), and the POST-to-handler
latency p50/p99 (every 50th event sampled).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
BIN = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
EVENTS = 1000
PAYLOAD = "x" * 64


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(url: str, seconds: float, threads: int, out: Any) -> None:
    """The load generator (its own process): post stamped bodies, resend refused suffixes."""
    counts: dict[str, float] = {"events": 0, "r202": 0, "r429": 0, "other": 0, "errors": 0}
    lock = threading.Lock()
    end = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    def worker() -> None:
        with httpx.Client(timeout=10.0) as http:
            while time.perf_counter() < end:
                with lock:
                    first = next(counter) * EVENTS
                t = time.time()
                left = [orjson.dumps({"n": first + i, "t": t, "payload": PAYLOAD})
                        for i in range(EVENTS)]  # fmt: skip
                key, offset = uuid.uuid4().hex, 0
                while left and time.perf_counter() < end + 5:
                    idem = key if not offset else f"{key}+{offset}"
                    headers = {"content-type": "application/x-ndjson", "idempotency-key": idem}
                    try:
                        r = http.post(url, content=b"\n".join(left), headers=headers)
                    except httpx.HTTPError:
                        with lock:
                            counts["errors"] += 1
                        continue
                    k = r.json().get("accepted", 0) if r.status_code in (202, 429) else 0
                    with lock:
                        counts["events"] += k
                        counts[{202: "r202", 429: "r429"}.get(r.status_code, "other")] += 1
                    left, offset = left[k:], offset + k
                    if r.status_code == 429:
                        time.sleep(0.005)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    counts["start"] = start
    counts["seconds"] = time.time() - start
    out.put(counts)


def _up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def _handled(out: Path) -> tuple[int, float, list[float]]:
    """Events handled, the time of the last batch, the sampled latencies."""
    n, last = 0, 0.0
    lat: list[float] = []
    for f in out.parent.glob(out.name + "-*"):
        for line in f.read_text().splitlines():
            now, size, *samples = line.split()
            n += int(size)
            last = max(last, float(now))
            lat.extend(float(x) for x in samples)
    return n, last, lat


def _run(port: int, seconds: float, out: Path) -> dict[str, float]:
    """Drive the server on ``port``; wait until everything accepted is handled; figures."""
    q: Any = multiprocessing.Queue()
    loader = multiprocessing.Process(
        target=_load, args=(f"http://127.0.0.1:{port}/v1/events", seconds, 4, q)
    )
    loader.start()
    counts: dict[str, float] = q.get()
    loader.join()
    deadline = time.monotonic() + 120
    while True:
        n, last, lat = _handled(out)
        if n >= counts["events"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    lat.sort()
    return {
        **counts,
        "accepted_rate": counts["events"] / counts["seconds"],
        "handled": n,
        "e2e_rate": n / (last - counts["start"]),
        "p50": lat[len(lat) // 2] if lat else float("nan"),
        "p99": lat[int(len(lat) * 0.99)] if lat else float("nan"),
    }


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def in_process(seconds: float, tmp: Path) -> dict[str, float]:
    """``serve`` with the handler in the ingest process."""
    out, port = tmp / "inproc", _port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DURABLE_OUT": str(out)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "serve", "benchmarks.durable_app:factory",
         "--port", str(port), "--dead-letters", ""],
        env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _up(port, proc)
        return _run(port, seconds, out)
    finally:
        _stop([proc])


def durable(seconds: float, workers: int, tmp: Path) -> dict[str, float]:
    """``serve --nats`` -> JetStream -> ``workers`` ``sluiceway worker`` processes."""
    out, port, nport = tmp / "durable", _port(), _port()
    url = f"nats://127.0.0.1:{nport}"
    server = subprocess.Popen(
        [BIN, "-js", "-a", "127.0.0.1", "-p", str(nport), "-sd", str(tmp / "store")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", nport), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DURABLE_OUT": str(out)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sluiceway", "serve", "--nats", url, "--port", str(port),
             "--max-msgs", "10000"],
            env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        _up(port, procs[0])
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "sluiceway", "worker", "benchmarks.durable_app:factory",
                 "--nats", url],
                env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        time.sleep(1.5)  # let the workers connect and create their consumers
        return _run(port, seconds, out)
    finally:
        _stop(procs)
        server.terminate()
        server.wait(20)


def _line(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<40} accepted {r['accepted_rate'] / 1e3:6.1f} k ev/s  end-to-end "
        f"{r['e2e_rate'] / 1e3:6.1f} k ev/s  POST->handler p50 {r['p50'] * 1e3:6.1f} ms  "
        f"p99 {r['p99'] * 1e3:6.1f} ms  (202s {r['r202']:.0f}, 429s {r['r429']:.0f}, "
        f"errors {r['errors']:.0f})"
    )


def main() -> None:
    """Both modes, one after the other, then the ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="sluiceway worker processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local = in_process(args.seconds, Path(tmp))
        far = durable(args.seconds, args.workers, Path(tmp))
    print(_line("serve, in-process pipeline:", local))
    print(_line(f"serve --nats -> JetStream -> {args.workers} worker:", far))
    print(
        f"durable / in-process: accepted {far['accepted_rate'] / local['accepted_rate']:.2f}x, "
        f"end-to-end {far['e2e_rate'] / local['e2e_rate']:.2f}x; handled "
        f"{local['handled']:.0f} and {far['handled']:.0f} events"
    )


if __name__ == "__main__":
    main()
