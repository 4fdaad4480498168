"""Scale-out over a real nats-server (JetStream on, loopback, a free port, a temp store)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.js.api import ConsumerConfig, StreamConfig

import sluiceway as sw
import sluiceway.nats as sluiceway_nats
from sluiceway.nats import (
    EventNotEncodable,
    EventTooLarge,
    Publisher,
    PublishError,
    Worker,
    ensure_streams,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")


class NatsServer:
    """A nats-server process with JetStream on 127.0.0.1."""

    def __init__(
        self, store: Path, port: int | None = None, max_payload: int | None = None
    ) -> None:
        """Start it (a free port unless given) and wait until it accepts connections.

        ``max_payload`` (bytes) goes into a config file (the server has no flag for it).
        """
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.store = store
        self.url = f"nats://127.0.0.1:{port}"
        self.max_payload = max_payload
        cmd = [BIN, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
        if max_payload is not None:
            store.mkdir(parents=True, exist_ok=True)
            conf = store.parent / f"nats-{port}.conf"
            conf.write_text(f"max_payload: {max_payload}\n")
            cmd += ["-c", str(conf)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate and wait."""
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh server per test."""
    s = NatsServer(tmp_path / "store")
    yield s
    s.stop()


async def _publish(url: str, events: list[dict[str, Any]], batch: int = 1000) -> int:
    async with Publisher(url, batch_size=batch, create_stream=True) as pub:
        await pub.publish_many(events)
    return pub.envelopes


def _start_worker(url: str, out: Path, ack_wait: float = 2.0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLUICEWAY_TEST_OUT": str(out)}
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "worker", "tests.nats_app:factory", "--nats", url,
         "--ack-wait", str(ack_wait), "--max-deliver", "3"],
        env=env, cwd=ROOT,
    )  # fmt: skip


def _processed(out: Path) -> Counter[int]:
    seen: Counter[int] = Counter()
    for f in out.parent.glob(out.name + "-*"):
        seen.update(int(x) for x in f.read_text().split())
    return seen


async def _stream_state(url: str) -> tuple[int, list[Any]]:
    nc = await nats.connect(url)
    out = await _stream_state_on(nc.jetstream())
    await nc.close()
    return out


async def _stream_state_on(js: Any) -> tuple[int, list[Any]]:
    """Messages left in the work stream, and the dead-letter records, decoded."""
    info = await js.stream_info("SLUICEWAY")
    dead_info = await js.stream_info("SLUICEWAY_DEAD")
    dead: list[Any] = []
    for seq in range(dead_info.state.first_seq, dead_info.state.last_seq + 1):
        if dead_info.state.messages == 0:
            break
        msg = await js.get_msg("SLUICEWAY_DEAD", seq)
        dead.append(orjson.loads(msg.data or b"{}"))
    return info.state.messages, dead


def _wait_for(out: Path, ids: set[int], timeout: float) -> Counter[int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = _processed(out)
        if ids <= set(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def _wait_empty(url: str, timeout: float = 30) -> int:
    """Wait until the work queue is empty (redeliveries come after AckWait); return what is left."""
    deadline = time.monotonic() + timeout
    remaining, _ = asyncio.run(_stream_state(url))
    while remaining and time.monotonic() < deadline:
        time.sleep(0.2)
        remaining, _ = asyncio.run(_stream_state(url))
    return remaining


def _stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(10)


def test_three_workers_one_killed_nothing_lost(server: NatsServer, tmp_path: Path) -> None:
    """100,000 events, 3 workers, one SIGKILLed mid-stream: nothing lost.

    Every event is processed at least once, duplicates are bounded by what the killed worker
    had unacked, the stream ends empty, and the dead-letter stream holds the poison events.
    """
    n = 100_000
    poison = {777, 55_555, 99_001}
    events = [{"n": i, **({"poison": True} if i in poison else {})} for i in range(n)]
    envelopes = asyncio.run(_publish(server.url, events))
    assert envelopes == n // 1000
    out = tmp_path / "processed"
    workers = [_start_worker(server.url, out) for _ in range(3)]
    try:
        deadline = time.monotonic() + 60
        while sum(_processed(out).values()) < n // 5:  # a fifth done: kill one mid-stream
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        workers[0].kill()
        seen = _wait_for(out, set(range(n)) - poison, timeout=120)
        # The killed worker's unacked envelopes come back after AckWait (2 s here).
        remaining = _wait_empty(server.url)
        seen = _processed(out)
    finally:
        _stop_all(workers)
    good = set(range(n)) - poison
    assert good <= set(seen)  # at least once
    assert not (poison & set(seen))
    duplicates = sum(c - 1 for c in seen.values())
    assert duplicates <= 64 * 1000  # at most the killed worker's unacked envelopes
    assert remaining == 0
    _, dead = asyncio.run(_stream_state(server.url))
    dead_events = [e["n"] for d in dead for e in d.get("events", [])]
    # Exactly the poison events; one whose envelope the killed worker held may appear twice
    # (the dead-letter record is stored before the ack, and delivery is at-least-once).
    assert set(dead_events) == poison
    assert len(dead_events) <= 2 * len(poison)


def test_server_restart_mid_run_loses_nothing(server: NatsServer, tmp_path: Path) -> None:
    """The server restarts (same store) while workers consume: every event still processed."""
    n = 20_000
    asyncio.run(_publish(server.url, [{"n": i} for i in range(n)]))
    out = tmp_path / "processed"
    env_delay = {"SLUICEWAY_TEST_DELAY": "0.005"}
    os.environ.update(env_delay)
    try:
        workers = [_start_worker(server.url, out) for _ in range(2)]
        deadline = time.monotonic() + 60
        while sum(_processed(out).values()) < n // 10:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        server.stop()
        time.sleep(0.5)
        restarted = NatsServer(server.store, port=server.port)
        server.proc = restarted.proc
        seen = _wait_for(out, set(range(n)), timeout=120)
        # An ack lost in the restart means that envelope comes back after AckWait (2 s here)
        # and is handled again: at-least-once. Wait for the stream to empty, then stop.
        remaining = _wait_empty(server.url)
        _stop_all(workers)
    finally:
        for k in env_delay:
            os.environ.pop(k, None)
    assert set(range(n)) <= set(seen)
    assert remaining == 0


def test_worker_in_process_acks_only_when_done(server: NatsServer) -> None:
    """An envelope is acked only after its events have an outcome; priority goes first."""
    handled: list[Any] = []

    def handler(batch: list[Any]) -> None:
        handled.extend(e["n"] for e in batch)

    async def main() -> tuple[int, int]:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream(), "SLUICEWAY", "sluiceway.events")
        async with Publisher(nc, batch_size=10) as pub:
            await pub.publish_many([{"n": i} for i in range(50)])
            await pub.publish({"n": -1}, priority=True)
        pipeline = sw.Pipeline(handler, max_delay=0.001)
        worker = Worker(pipeline, server.url, ack_wait=5)
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 20
        while worker.acked < 6:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        worker.stop()
        await task
        values = {f.name: f.samples[0].value for f in worker.metrics()}
        assert values["sluiceway_nats_envelopes_acked"] == 6
        assert values["sluiceway_nats_envelopes_fetched"] >= 6
        info = await nc.jetstream().stream_info("SLUICEWAY")
        await nc.close()
        return worker.acked, info.state.messages

    acked, remaining = asyncio.run(main())
    assert acked == 6  # 5 envelopes of 10 and 1 priority envelope
    assert remaining == 0
    assert sorted(handled) == [-1, *range(50)]


def test_envelope_past_max_deliver_moves_to_the_dead_letter_stream(server: NatsServer) -> None:
    """An envelope that exhausted max_deliver is moved to the dead-letter stream, off the queue.

    Another consumer naks the envelope until the server gives up and sends its
    MAX_DELIVERIES advisory; the worker, subscribed to advisories (and kept from fetching by
    a full pipeline), moves the envelope.
    """
    gate = threading.Event()

    async def main() -> tuple[int, Any]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        # Limits retention, so that a second consumer may read the same subject.
        await js.add_stream(
            StreamConfig(
                name="SLUICEWAY", subjects=["sluiceway.events", "sluiceway.events.priority"]
            )
        )
        async with Publisher(nc, batch_size=3) as pub:
            await pub.publish_many([{"n": 1}, {"n": 2}, {"n": 3}])
        pipeline = sw.Pipeline(lambda b: gate.wait(10), capacity=1, shards=1)
        assert pipeline.submit("blocker")  # full: the worker fetches nothing
        worker = Worker(pipeline, server.url)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)  # its advisory subscription is in place
        config = ConsumerConfig(
            durable_name="naker", ack_wait=0.2, max_deliver=2, filter_subject="sluiceway.events"
        )
        sub = await js.pull_subscribe("sluiceway.events", durable="naker", config=config)
        for _ in range(2):
            (msg,) = await sub.fetch(1, timeout=5)
            await msg.nak()
        with contextlib.suppress(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)  # the server notices max_deliver here
        deadline = time.monotonic() + 10
        while worker.moved_dead < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        gate.set()
        worker.stop()
        await task
        info = await js.stream_info("SLUICEWAY")
        dead = await js.get_msg("SLUICEWAY_DEAD", 1)
        await nc.close()
        return info.state.messages, orjson.loads(dead.data or b"{}")

    remaining, dead = asyncio.run(main())
    assert dead["reason"] == "max-deliver"
    assert [e["n"] for e in orjson.loads(dead["envelope"])["events"]] == [1, 2, 3]
    assert remaining == 0  # deleted from the queue


def _raw_publish(url: str, payloads: list[bytes]) -> None:
    """Publish raw bodies to the work subject (creating the streams)."""

    async def main() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await ensure_streams(js, "SLUICEWAY", "sluiceway.events")
        for payload in payloads:
            await js.publish("sluiceway.events", payload)
        await nc.close()

    asyncio.run(main())


MALFORMED = [
    b'{"id": "null", "events": null}',
    b'{"id": "number", "events": 3}',
    b'{"id": "string", "events": "abc"}',
    b'{"id": "object", "events": {"n": 1}}',
    b'{"id": "missing"}',
    b"[1, 2, 3]",
    b"not json at all \xff",
]


def test_malformed_envelopes_are_dead_lettered_alone(server: NatsServer, tmp_path: Path) -> None:
    """Malformed envelopes mixed with good ones in the same fetches.

    Each malformed one (``events`` null, a number, a string, an object, missing; a body that
    is not an object; not JSON) lands in the dead-letter stream once with reason
    ``malformed-envelope`` and its raw body; every good event is processed exactly once;
    the ``sluiceway worker`` process keeps running; the work queue ends empty.
    """
    payloads: list[bytes] = []
    good: set[int] = set()
    for i, bad in enumerate(MALFORMED):
        ns = [10 * i + k for k in range(3)]
        good |= set(ns)
        events = [{"n": n, "id": f"g{n}"} for n in ns]
        payloads += [orjson.dumps({"id": f"good{i}", "events": events}), bad]
    _raw_publish(server.url, payloads)
    out = tmp_path / "processed"
    worker = _start_worker(server.url, out)
    try:
        seen = _wait_for(out, good, timeout=30)
        remaining = _wait_empty(server.url, timeout=15)
        assert worker.poll() is None, "the worker died"
    finally:
        _stop_all([worker])
    assert worker.returncode == 0
    assert seen == Counter(good)  # every good event exactly once
    assert remaining == 0
    _, dead = asyncio.run(_stream_state(server.url))
    assert [d["reason"] for d in dead] == ["malformed-envelope"] * len(MALFORMED)
    stored = sorted(d["envelope"] for d in dead)
    expected = sorted(b.decode("utf-8", "backslashreplace") for b in MALFORMED)
    assert stored == expected
    assert all(d["error"] for d in dead)


async def _stored_events(js: Any, stream: str = "SLUICEWAY") -> list[tuple[int, list[Any]]]:
    """(payload size, events) of every envelope in ``stream``, in order."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(stream, seq)
        out.append((len(msg.data or b""), orjson.loads(msg.data or b"{}")["events"]))
    return out


def test_unencodable_event_raises_at_publish(server: NatsServer) -> None:
    """An event orjson cannot encode raises at once; nothing of it is queued, the rest go.

    Before, it was buffered and the timer-driven flush failed in the background: publish()
    and close() raised nothing and the whole envelope was never stored.
    """

    async def main() -> list[tuple[int, list[Any]]]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        async with Publisher(nc, batch_size=100, max_delay=0.01, create_stream=True) as pub:
            await pub.publish({"n": 1})
            with pytest.raises(EventNotEncodable) as info:
                await pub.publish({"n": 2, "bad": {1, 2}})  # a set: not JSON
            assert isinstance(info.value, TypeError)
            assert isinstance(info.value, sw.SluicewayError)
            assert info.value.events == [{"n": 2, "bad": {1, 2}}]
            await pub.publish({"n": 3})
            await asyncio.sleep(0.1)  # the timer-driven flush runs
            await pub.publish({"n": 4})
        stored = await _stored_events(js)
        await nc.close()
        return stored

    stored = asyncio.run(main())
    assert [e["n"] for _, events in stored for e in events] == [1, 3, 4]


def test_envelopes_split_below_the_server_max_payload(tmp_path: Path) -> None:
    """Envelopes are split so none exceeds the server's max_payload; every event is stored.

    An event that alone exceeds it raises EventTooLarge (also a ValueError) at publish().
    """
    server = NatsServer(tmp_path / "store", max_payload=4096)
    try:

        async def main() -> tuple[int, list[tuple[int, list[Any]]]]:
            nc = await nats.connect(server.url)
            assert nc.max_payload == 4096
            js = nc.jetstream()
            async with Publisher(nc, batch_size=1000, create_stream=True) as pub:
                for i in range(100):
                    await pub.publish({"n": i, "pad": "x" * 300})
                with pytest.raises(EventTooLarge) as info:
                    await pub.publish({"n": -1, "pad": "x" * 5000})
                assert isinstance(info.value, ValueError)
                assert info.value.size > 4096
                with pytest.raises(EventTooLarge):
                    await pub.publish({"n": -2, "pad": "x" * 5000}, priority=True)
            stored = await _stored_events(js)
            await nc.close()
            return pub.envelopes, stored

        envelopes, stored = asyncio.run(main())
    finally:
        server.stop()
    assert [e["n"] for _, events in stored for e in events] == list(range(100))
    assert envelopes == len(stored) > 1
    assert all(size <= 4096 for size, _ in stored)
    assert max(size for size, _ in stored) > 4096 - 400  # filled, not one event each


def test_background_flush_failure_surfaces_on_next_call_and_close(server: NatsServer) -> None:
    """A failure the publisher cannot foresee (no stream holds the subject) is not silent.

    The timer-driven flush sends the envelope and the server refuses it; the next flush()
    raises PublishError carrying the events that were not stored, and so does close() for a
    later failure.
    """

    async def main() -> None:
        async with Publisher(server.url, max_delay=0.01) as pub:  # no stream created
            await pub.publish({"n": 1})
            await pub.publish({"n": 2})
            await asyncio.sleep(0.1)  # the timer-driven flush has sent the envelope
            with pytest.raises(PublishError) as info:
                await pub.flush()
            assert [e["n"] for e in info.value.events] == [1, 2]
            assert all(e["id"] for e in info.value.events)  # a resend keeps their ids
            assert info.value.__cause__ is not None
            await pub.publish({"n": 3})  # the failure was reported once: this goes on
            await asyncio.sleep(0.1)
            with pytest.raises(PublishError) as info:
                await pub.close()
            assert [e["n"] for e in info.value.events] == [3]
        # __aexit__'s second close() raises nothing new
        assert pub.nc is not None
        assert pub.nc.is_closed

    asyncio.run(main())


def test_dead_letter_records_over_max_payload_are_split_or_truncated(tmp_path: Path) -> None:
    """20 kB events and a downstream that always fails, against max_payload 64 KiB.

    The worker never crashes (before: MaxPayloadError): records that together exceed the
    limit go in several messages, and a record that alone exceeds it (a 70 kB error
    message) is truncated, keeping its reason, the start of its error and its event's id.
    Every event is in the dead-letter stream exactly once and every envelope is acked.
    """
    limit = 65_536
    server = NatsServer(tmp_path / "store", max_payload=limit)
    batches: list[int] = []  # records per dead-letter listener call

    def handler(batch: list[dict[str, Any]]) -> None:
        huge = any(e.get("huge") for e in batch)
        raise ValueError("downstream down" + "!" * (70_000 if huge else 0))

    async def main() -> tuple[Worker, int, list[bytes]]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        async with Publisher(nc, create_stream=True) as pub:
            await pub.publish_many([{"id": f"e{n}", "pad": "x" * 20_000} for n in range(12)])
        pipeline = sw.Pipeline(handler, shards=1, batch_size=8, max_delay=0.05)
        pipeline.add_dead_letter_listener(lambda records: batches.append(len(records)))
        worker = Worker(pipeline, server.url, ack_wait=5)
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 20
        while worker.acked < pub.envelopes:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the envelopes were not acked"
            await asyncio.sleep(0.02)
        async with Publisher(nc) as pub2:
            await pub2.publish({"id": "big", "huge": True, "pad": "x" * 20_000})
        while worker.acked < pub.envelopes + 1:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the last envelope was not acked"
            await asyncio.sleep(0.02)
        worker.stop()
        await task
        info = await js.stream_info("SLUICEWAY")
        dead_info = await js.stream_info("SLUICEWAY_DEAD")
        dead = [
            (await js.get_msg("SLUICEWAY_DEAD", seq)).data or b""
            for seq in range(1, dead_info.state.last_seq + 1)
        ]
        await nc.close()
        return worker, info.state.messages, dead

    try:
        worker, remaining, dead = asyncio.run(main())
    finally:
        server.stop()
    assert remaining == 0
    assert worker.acked == worker.fetched == 5  # 4 envelopes of 3 events, then 1
    assert all(len(d) <= limit for d in dead)
    records = [orjson.loads(d) for d in dead]
    full = [e["id"] for r in records for e in r["events"]]
    truncated = [r for r in records if r.get("truncated")]
    assert sorted(full + [r["event_id"] for r in truncated]) == sorted(
        [f"e{n}" for n in range(12)] + ["big"]
    )
    # A batch of 4 or more 20 kB records (over 80 kB) had to be split over messages, and
    # messages hold several records where they fit.
    assert max(batches) >= 4
    assert len(records) > 12 * 20_000 // limit
    assert max(len(r["events"]) for r in records) >= 2
    assert [r["event_id"] for r in truncated] == ["big"]
    (big,) = truncated
    assert big["reason"] == "handler-error"
    assert big["events"] == []
    assert big["errors"][0].startswith("downstream down!!!")
    assert big["event_bytes"] > 20_000
    assert all(r["reason"] == "handler-error" for r in records)


def test_malformed_envelope_too_big_to_wrap_is_truncated(tmp_path: Path) -> None:
    """A malformed body near max_payload whose JSON escaping would double it is truncated.

    The dead-letter record keeps its reason and error, marks itself truncated with the body's
    size, fits the limit, and the worker goes on to process the next good envelope.
    """
    limit = 4096
    server = NatsServer(tmp_path / "store", max_payload=limit)
    handled: list[Any] = []
    body = b'{"events": "' + b'\\"' * 1300 + b'"}'  # a string of quotes: escapes grow it

    async def main() -> tuple[Worker, list[Any]]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js, "SLUICEWAY", "sluiceway.events")
        await js.publish("sluiceway.events", body)
        await js.publish("sluiceway.events", orjson.dumps({"id": "ok", "events": [{"n": 1}]}))
        worker = Worker(sw.Pipeline(handled.extend, max_delay=0.001), server.url, ack_wait=5)
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 20
        while worker.acked < 2:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        worker.stop()
        await task
        dead = [orjson.loads((await js.get_msg("SLUICEWAY_DEAD", 1)).data or b"")]
        await nc.close()
        return worker, dead

    try:
        worker, dead = asyncio.run(main())
    finally:
        server.stop()
    assert len(body) < limit
    assert worker.malformed == 1
    assert handled == [{"n": 1}]
    (record,) = dead
    assert record["reason"] == "malformed-envelope"
    assert record["truncated"] is True
    assert record["envelope_bytes"] == len(body)
    assert "str" in record["error"]
    assert body.decode().startswith(record["envelope"])


def test_max_deliver_advisory_is_moved_by_exactly_one_of_three_workers(
    server: NatsServer,
) -> None:
    """Three workers hear the same MAX_DELIVERIES advisory; the dead-letter stream gets one copy.

    As in the test above, another consumer naks an envelope past max_deliver while the
    workers' pipelines are full; then exactly one worker reports the move, the envelope is off
    the queue, and the dead-letter stream holds it once.
    """
    gate = threading.Event()

    async def main() -> tuple[int, list[Worker], int]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name="SLUICEWAY", subjects=["sluiceway.events", "sluiceway.events.priority"]
            )
        )
        async with Publisher(nc, batch_size=3) as pub:
            await pub.publish_many([{"n": 1}, {"n": 2}, {"n": 3}])
        workers, tasks = [], []
        for _ in range(3):
            pipeline = sw.Pipeline(lambda b: gate.wait(10), capacity=1, shards=1)
            assert pipeline.submit("blocker")  # full: the worker fetches nothing
            workers.append(worker := Worker(pipeline, server.url))
            tasks.append(asyncio.create_task(worker.run()))
        await asyncio.sleep(0.5)  # their advisory subscriptions are in place
        config = ConsumerConfig(
            durable_name="naker", ack_wait=0.2, max_deliver=2, filter_subject="sluiceway.events"
        )
        sub = await js.pull_subscribe("sluiceway.events", durable="naker", config=config)
        for _ in range(2):
            (msg,) = await sub.fetch(1, timeout=5)
            await msg.nak()
        with contextlib.suppress(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)  # the server notices max_deliver here
        deadline = time.monotonic() + 10
        while sum(w.moved_dead for w in workers) < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # time for a second (wrong) copy to arrive
        gate.set()
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        info = await js.stream_info("SLUICEWAY")
        dead = await js.stream_info("SLUICEWAY_DEAD")
        await nc.close()
        return info.state.messages, workers, dead.state.messages

    remaining, workers, dead = asyncio.run(main())
    assert sorted(w.moved_dead for w in workers) == [0, 0, 1]
    assert dead == 1
    assert remaining == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _worker_cli(url: str, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A ``sluiceway worker`` process whose stdout and stderr go to one file."""
    log = tmp_path / f"worker-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLUICEWAY_TEST_OUT": str(tmp_path / "out")}
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluiceway", "worker", "tests.nats_app:factory",
             "--nats", url, *extra],
            env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, log


def _lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


def _wait_line(log: Path, text: str, timeout: float) -> None:
    """Wait (bounded) until ``text`` appears in the log."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not logged: {_lines(log)}"
        time.sleep(0.05)


def test_worker_without_server_gives_up_after_connect_timeout(tmp_path: Path) -> None:
    """Nothing listens: after --connect-timeout it exits non-zero with one clear line.

    The output is the 'connecting to' line and the error. Before: a traceback per attempt,
    hundreds a second, forever.
    """
    url = f"nats://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    proc, log = _worker_cli(url, tmp_path, "--connect-timeout", "1.5")
    code = proc.wait(30)
    took = time.monotonic() - started
    lines = _lines(log)
    assert code == 1
    assert 1.5 <= took < 15
    assert len(lines) == 2, lines
    assert "connecting to" in lines[0]
    assert "cannot connect" in lines[1]
    assert url in lines[1]
    assert "1.5s" in lines[1]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:4222", "scheme"),
        ("nats://no-such-host.invalid:4222", "resolve"),
        ("nats://", "host"),
        ("nats://[::1", "not a URL"),
    ],
)
def test_worker_bad_url_fails_at_once(tmp_path: Path, url: str, words: str) -> None:
    """A wrong scheme, an unresolvable host or no host: one line at once, exit non-zero."""
    started = time.monotonic()
    proc, log = _worker_cli(url, tmp_path, "--connect-timeout", "60")
    code = proc.wait(30)
    lines = _lines(log)
    assert code != 0
    assert time.monotonic() - started < 10  # well before the connect timeout
    assert len(lines) == 1, lines
    assert words in lines[0]
    assert "Traceback" not in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_on_signal_while_connecting(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM and SIGINT stop a worker still trying to connect (before: only kill -9 did)."""
    url = f"nats://127.0.0.1:{_free_port()}"
    proc, log = _worker_cli(url, tmp_path, "--connect-timeout", "60")
    _wait_line(log, "connecting to", timeout=20)
    time.sleep(0.5)  # a few attempts are under way
    proc.send_signal(sig)
    try:
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert "stopped before" in text


def test_worker_logs_one_line_per_connection_state_change(
    server: NatsServer, tmp_path: Path
) -> None:
    """The server goes away for 3 s and comes back: one line for each change of state.

    One 'disconnected' and one 'reconnected' line, no traceback; the worker then processes
    new events and stops on SIGTERM.
    """
    proc, log = _worker_cli(server.url, tmp_path, "--connect-timeout", "10")
    try:
        _wait_line(log, "consuming", timeout=20)
        server.stop()
        _wait_line(log, "disconnected", timeout=20)
        time.sleep(3)  # many reconnect attempts
        restarted = NatsServer(server.store, port=server.port)
        server.proc = restarted.proc
        _wait_line(log, "reconnected", timeout=30)
        asyncio.run(_publish(server.url, [{"n": i} for i in range(10)]))
        seen = _wait_for(tmp_path / "out", set(range(10)), timeout=30)
        assert set(range(10)) <= set(seen)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert code == 0
    assert "Traceback" not in text
    assert text.count("disconnected") == 1, text
    assert text.count("reconnected") == 1, text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_on_signal_while_disconnected(
    server: NatsServer, tmp_path: Path, sig: signal.Signals
) -> None:
    """The server is gone for good: SIGTERM or SIGINT still stops the worker, in bounded time."""
    proc, log = _worker_cli(server.url, tmp_path, "--connect-timeout", "10")
    try:
        _wait_line(log, "consuming", timeout=20)
        server.stop()
        _wait_line(log, "disconnected", timeout=20)
        time.sleep(1)
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert "stopped" in text


def test_worker_repr_hides_credentials() -> None:
    """repr(Worker) and repr(Publisher) say what they are and never show a password."""
    pipeline = sw.Pipeline(lambda b: None)
    worker = Worker(pipeline, "nats://alice:s3cret@127.0.0.1:4222", durable="d1", name="ingest")
    text = repr(worker)
    assert "s3cret" not in text
    assert "alice" not in text
    assert text.startswith("Worker(")
    assert "127.0.0.1:4222" in text
    assert "'d1'" in text
    assert "'ingest'" in text
    pub = Publisher("nats://alice:s3cret@127.0.0.1:4222", stream="S")
    assert "s3cret" not in repr(pub)
    assert repr(pub).startswith("Publisher(stream='S'")
    pipeline.shutdown()


def test_worker_as_async_context_manager_with_labelled_metrics(server: NatsServer) -> None:
    """``async with Worker(...)`` consumes inside the block and drains and stops at its end.

    Its metrics carry the ``pipeline`` label (the worker's name) next to ``durable``, and
    read through a registry they sit beside the pipeline's own metrics.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    import sluiceway.prometheus as swp

    handled: list[Any] = []

    async def main() -> tuple[Worker, bytes, str]:
        pipeline = sw.Pipeline(handled.extend, max_delay=0.001)
        registry = CollectorRegistry()
        async with Worker(pipeline, server.url, name="ingest") as worker:
            swp.register(pipeline, registry, name="ingest")
            swp.add_source(worker.metrics, registry)
            state_inside = worker.state
            await _publish(server.url, [{"n": i} for i in range(20)], batch=5)
            deadline = time.monotonic() + 20
            while worker.acked < 4:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            text = generate_latest(registry)
        assert worker.nc is not None
        assert worker.nc.is_closed
        assert pipeline.closed
        return worker, text, state_inside

    worker, text, state_inside = asyncio.run(main())
    assert state_inside == "connected"
    assert worker.state == "closed"
    assert sorted(e["n"] for e in handled) == list(range(20))
    assert (
        b'sluiceway_nats_envelopes_acked_total{durable="sluiceway",pipeline="ingest"} 4.0' in text
    )
    assert b'sluiceway_nats_connected{durable="sluiceway",pipeline="ingest"} 1.0' in text
    assert b'sluiceway_items_processed_total{pipeline="ingest"} 20.0' in text
    families = {f.name: f for f in worker.metrics()}
    assert set(families) == set(sluiceway_nats.METRICS)
    for family in families.values():
        assert family.samples[0].labels == {"pipeline": "ingest", "durable": "sluiceway"}


def test_event_whose_key_fails_is_dead_lettered_alone(server: NatsServer) -> None:
    """An event the key function fails on (sw.InvalidItem) is dead-lettered alone.

    With a keyed pipeline, that event goes to the dead-letter stream with reason
    ``invalid-item``; the other events of its envelope are processed, the envelope is
    acked, and the worker goes on to the next envelope (before: the loop failed for ever).
    """
    handled: list[Any] = []

    async def main() -> tuple[Worker, list[Any], int]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        async with Publisher(nc, batch_size=3, create_stream=True) as pub:
            await pub.publish_many([{"user": 1, "n": 0}, {"n": 1}, {"user": 2, "n": 2}])
            await pub.publish_many([{"user": 3, "n": 3}])
        pipeline = sw.Pipeline(handled.extend, key=lambda e: e["user"], max_delay=0.001)
        worker = Worker(pipeline, server.url, ack_wait=5)
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 20
        while worker.acked < 2:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        worker.stop()
        await task
        _, dead = await _stream_state_on(js)
        info = await js.stream_info("SLUICEWAY")
        await nc.close()
        return worker, dead, info.state.messages

    worker, dead, remaining = asyncio.run(main())
    assert worker.acked == 2
    assert sorted(e["n"] for e in handled) == [0, 2, 3]
    assert remaining == 0
    (record,) = dead
    assert record["reason"] == "invalid-item"
    assert [e["n"] for e in record["events"]] == [1]
    assert "key function" in record["errors"][0]


def test_priority_event_that_cannot_be_sent_raises_at_once(server: NatsServer) -> None:
    """A priority event is sent by its own publish(): if sending fails, that call raises."""

    async def main() -> None:
        nc = await nats.connect(server.url)
        pub = await Publisher(nc, create_stream=True).start()
        await nc.close()  # the connection is gone
        with pytest.raises(PublishError) as info:
            await pub.publish({"n": 1}, priority=True)
        assert [e["n"] for e in info.value.events] == [1]
        assert isinstance(info.value.__cause__, nats.errors.ConnectionClosedError)
        await pub.close()  # reported once: nothing more to raise

    asyncio.run(main())


def test_worker_context_manager_raises_connect_error_and_ends_closed() -> None:
    """Entering ``async with Worker(...)`` with no server raises ConnectError in bounded time.

    The worker's state is then ``closed``; a bad scheme raises sw.ConfigError at once.
    """
    port = _free_port()

    async def main() -> tuple[Worker, float]:
        worker = Worker(sw.Pipeline(lambda b: None), f"nats://127.0.0.1:{port}", connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(sluiceway_nats.ConnectError, match="within 1s"):
            async with worker:
                pytest.fail("the block must not run")
        took = time.monotonic() - started
        with pytest.raises(sw.ConfigError, match="scheme"):
            async with Worker(sw.Pipeline(lambda b: None), "http://127.0.0.1:4222"):
                pytest.fail("the block must not run")
        return worker, took

    worker, took = asyncio.run(main())
    assert worker.state == "closed"
    assert 1 <= took < 10


def test_max_deliver_copy_is_deduplicated_by_msg_id(server: NatsServer) -> None:
    """Two workers moving the same envelope store it once in the dead-letter stream.

    Both read it before either deleted it; the copy's Nats-Msg-Id is derived from the stream
    sequence, so the stream's duplicate window drops the second.
    """

    async def main() -> int:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js, "SLUICEWAY", "sluiceway.events")
        body = orjson.dumps({"id": "e", "events": [{"n": 1}]})
        workers = [Worker(sw.Pipeline(lambda b: None), server.url) for _ in range(2)]
        for worker in workers:  # what each does with the advisory for stream sequence 7
            worker.nc, worker.js = nc, js
            await worker._publish_dead(body, "max-deliver", msg_id="max-deliver:SLUICEWAY:7")
        info = await js.stream_info("SLUICEWAY_DEAD")
        await nc.close()
        return info.state.messages

    assert asyncio.run(main()) == 1


def test_worker_with_a_bad_factory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A factory that returns something other than a Pipeline: one line, exit 2 (no server)."""
    (tmp_path / "badapp.py").write_text("def make():\n    return 42\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluiceway",
            "worker",
            "badapp:make",
            "--nats",
            "nats://127.0.0.1:1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "not a sluiceway.Pipeline" in lines[0]


def test_close_while_the_broker_is_down_closes_and_says_not_confirmed(tmp_path: Path) -> None:
    """``close()`` with the broker gone closes the connection and says "not confirmed stored".

    No reconnecting goes on in the background afterwards, and the error does not claim the
    events were not stored: a broker that received them may still store them.
    """
    broker = NatsServer(tmp_path / "js")

    async def main() -> None:
        pub = await Publisher(broker.url, create_stream=True, ack_timeout=1).start()
        await pub.publish({"n": 0})
        await pub.flush()
        broker.stop()
        await asyncio.sleep(0.3)
        for n in range(1, 4):
            await pub.publish({"n": n})
        started = time.monotonic()
        with pytest.raises(PublishError) as info:
            await pub.close()
        assert time.monotonic() - started < 10
        assert "not confirmed stored" in str(info.value)
        assert "may still be stored" in str(info.value)
        assert sorted(e["n"] for e in info.value.events) == [1, 2, 3]
        assert pub.nc is not None
        assert pub.nc.is_closed

    try:
        asyncio.run(main())
    finally:
        broker.stop()
