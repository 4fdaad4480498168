"""Events/s through NATS JetStream: sluiceway envelopes against one message per event.

Run: ``.venv/bin/python benchmarks/nats_throughput.py [--events N]``. Starts a real
``nats-server -js`` on loopback, then in one run measures:

- raw nats-py: publish one JetStream message per event (acks awaited in bulk), then one
  pull consumer fetches them in batches and acks each message;
- sluiceway: ``Publisher`` (envelopes of 1,000) -> stream -> 1 and then 2 ``sluiceway
  worker`` processes (the cpu handler), until the consumer has nothing pending or unacked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import orjson
from nats.js.api import ConsumerConfig, StreamConfig

from sluiceway.nats import Publisher

ROOT = Path(__file__).resolve().parent.parent
BIN = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
PAYLOAD = "x" * 64


def _server(store: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([BIN, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"nats://127.0.0.1:{port}"


async def raw(url: str, n: int) -> float:
    """One message per event: publish, fetch, ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="RAW", subjects=["raw"]))
    start = time.perf_counter()
    for i in range(n):
        await js.publish_async("raw", orjson.dumps({"id": i, "payload": PAYLOAD}))
        if i % 1000 == 999:
            await js.publish_async_completed()
    await js.publish_async_completed()
    sub = await js.pull_subscribe("raw", durable="raw", config=ConsumerConfig(max_ack_pending=-1))
    done = 0
    while done < n:
        for msg in await sub.fetch(256, timeout=5):
            total = len(orjson.loads(msg.data)["payload"])  # the cpu handler's work
            assert total
            await msg.ack()
            done += 1
    elapsed = time.perf_counter() - start
    await nc.close()
    return n / elapsed


def ours(url: str, n: int, workers: int, stream_name: str) -> float:
    """Publisher -> stream -> ``workers`` worker processes; events/s end to end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subject = f"bench.{stream_name.lower()}"
    command = [
        *(sys.executable, "-m", "sluiceway", "worker", "benchmarks.nats_app:factory"),
        *("--nats", url, "--stream", stream_name, "--subject", subject),
    ]
    procs = [subprocess.Popen(command, env=env, cwd=ROOT) for _ in range(workers)]
    try:
        time.sleep(1.5)  # let them connect and create the consumers

        async def publish() -> None:
            async with Publisher(
                url, stream=stream_name, subject=subject, batch_size=1000, create_stream=True
            ) as p:
                for i in range(n):
                    await p.publish({"id": i, "payload": PAYLOAD})

        start = time.perf_counter()
        asyncio.run(publish())

        async def drained() -> bool:
            nc = await nats.connect(url)
            try:
                info = await nc.jetstream().consumer_info(stream_name, "sluiceway")
                return bool(info.num_pending == 0 and info.num_ack_pending == 0)
            finally:
                await nc.close()

        while not asyncio.run(drained()):
            time.sleep(0.02)
        return n / (time.perf_counter() - start)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)


def main() -> None:
    """Raw loop, then sluiceway with 1 and 2 workers."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--raw-events", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        proc, url = _server(store)
        try:
            base = asyncio.run(raw(url, args.raw_events))
            one = ours(url, args.events, 1, "ONE")
            two = ours(url, args.events, 2, "TWO")
        finally:
            proc.terminate()
            proc.wait(20)
    print(f"raw nats-py, one message per event: {base / 1e3:8.1f} k ev/s")
    print(f"sluiceway, 1 worker:                {one / 1e3:8.1f} k ev/s  ({one / base:.1f}x raw)")
    print(f"sluiceway, 2 workers:               {two / 1e3:8.1f} k ev/s  ({two / base:.1f}x raw, "
          f"{two / 2 / base:.1f}x per worker)")  # fmt: skip


if __name__ == "__main__":
    main()
