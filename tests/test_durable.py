"""``sluiceway serve --nats``: a 202 that survives crashes, against a real nats-server.

Each test runs the ingest tier (``serve --nats``) and ``sluiceway worker`` as subprocesses
(``tests/nats_app.py`` records every processed ``n``), posts over loopback with bounded
loops, and checks that every event of a 202 (or of a 429's accepted prefix) is processed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
from nats.js.api import DiscardPolicy

import sluiceway as sw
from sluiceway._durable import split_envelopes
from tests.test_nats import (
    ROOT,
    NatsServer,
    _free_port,
    _processed,
    _start_worker,
    _stop_all,
    _wait_empty,
    _wait_for,
    server,
)

__all__ = ["server"]  # the fixture, re-used from test_nats

NDJSON = {"content-type": "application/x-ndjson"}


def _serve(url: str, port: int, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``sluiceway serve --nats url`` on ``port``; returns once /readyz says ready."""
    log = open(tmp_path / f"serve-{port}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "serve", "--nats", url, "--port", str(port),
         "--ack-timeout", "1", *extra],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "serve --nats exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve --nats did not come up"
        time.sleep(0.05)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; SIGTERM (then kill) whatever still runs at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    _stop_all(started)


def _body(ns: range | list[int]) -> bytes:
    return b"".join(b'{"n":%d}\n' % n for n in ns)


class Load:
    """Posts 200-event bodies at full speed from a thread; records what was accepted.

    ``accepted`` holds every ``n`` answered 202, or within a 429's accepted prefix; a
    request that failed (the ingest process died) counts nothing and its events are not sent
    again (new ones follow). Bounded: stops at ``stop`` or after ``seconds``.
    """

    def __init__(self, port: int, seconds: float, size: int = 200) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/events"
        self.seconds = seconds
        self.size = size
        self.accepted: list[int] = []
        self.statuses: Counter[int | str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        n = 0
        with httpx.Client(timeout=3.0) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                ns = range(n, n + self.size)
                n += self.size
                try:
                    r = client.post(self.url, content=_body(ns), headers=NDJSON)
                except httpx.TransportError:
                    self.statuses["error"] += 1
                    time.sleep(0.02)
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code in (202, 429):
                    self.accepted.extend(ns[: r.json()["accepted"]])
                if r.status_code != 202:
                    time.sleep(0.02)

    def join(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_kill_9_of_ingest_and_of_a_worker_loses_nothing_accepted(
    server: NatsServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Ingest and a worker SIGKILLed under full load: every accepted event is processed.

    The ingest process is restarted; accepted: a 202, or a 429's accepted prefix. At least
    once: the killed worker's unacked envelopes come back after AckWait.
    """
    out = tmp_path / "processed"
    port = _free_port()
    ingest = _serve(server.url, port, tmp_path)
    procs.append(ingest)
    workers = [_start_worker(server.url, out) for _ in range(2)]
    procs.extend(workers)
    load = Load(port, seconds=20)
    time.sleep(1.5)
    before = len(load.accepted)
    ingest.kill()  # kill -9 mid-stream
    ingest.wait(10)
    ingest = _serve(server.url, port, tmp_path)
    procs.append(ingest)
    time.sleep(1.0)
    workers[0].kill()  # kill -9: its unacked envelopes come back after AckWait (2 s)
    time.sleep(1.5)
    load.join()
    assert before > 0
    assert len(load.accepted) > before  # the restarted ingest accepted more
    killed = out.parent / f"{out.name}-{workers[0].pid}"
    assert killed.exists()  # the killed worker was consuming when it died
    assert load.statuses[202] > 0
    accepted = set(load.accepted)
    seen = _wait_for(out, accepted, timeout=60)
    missing = accepted - set(seen)
    assert not missing, f"{len(missing)} accepted events never processed"
    assert _wait_empty(server.url) == 0
    print(f"accepted {len(accepted)} events; answers {dict(load.statuses)}")


def test_stream_limits_give_429_with_the_stored_prefix_and_nothing_beyond(
    server: NatsServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A full stream gives 429 with the stored prefix, and nothing beyond it is stored.

    With max-msgs 3 and 10 events an envelope, 50 events get 429 ``accepted: 30``; the
    stream holds exactly events 0..29, in order; a further body gets ``accepted: 0``.
    """
    port = _free_port()
    procs.append(_serve(server.url, port, tmp_path, "--max-msgs", "3", "--envelope-events", "10"))
    url = f"http://127.0.0.1:{port}/v1/events"
    r = httpx.post(url, content=_body(range(50)), headers=NDJSON)
    assert r.status_code == 429
    assert r.json()["accepted"] == 30
    assert "maximum messages" in r.json()["error"]
    assert int(r.headers["retry-after"]) >= 1
    r = httpx.post(url, content=_body(range(50, 60)), headers=NDJSON)
    assert (r.status_code, r.json()["accepted"]) == (429, 0)

    async def stored() -> tuple[Any, list[int]]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        info = await js.stream_info("SLUICEWAY")
        ns: list[int] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("SLUICEWAY", seq)
            ns.extend(e["n"] for e in orjson.loads(msg.data or b"")["events"])
        await nc.close()
        return info.config, ns

    config, ns = asyncio.run(stored())
    assert ns == list(range(30))
    assert config.max_msgs == 3
    assert config.discard in (DiscardPolicy.NEW, "new")


def test_resent_request_within_the_duplicate_window_is_processed_once(
    server: NatsServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A resent request (same Idempotency-Key) is stored, and processed, once.

    The ingest's own key store is off (as after a restart), so JetStream's duplicate window
    does it; a suffix resent as ``<key>+<k>`` is deduplicated too.
    """
    out = tmp_path / "processed"
    port = _free_port()
    extra = ("--workers", "2", "--idempotency-keys", "0", "--envelope-events", "10")
    procs.append(_serve(server.url, port, tmp_path, *extra))  # each worker its own connection
    url = f"http://127.0.0.1:{port}/v1/events"
    key = {"idempotency-key": "send-1", **NDJSON}
    for _ in range(3):  # the client resends after timeouts
        r = httpx.post(url, content=_body(range(30)), headers=key)
        assert (r.status_code, r.json()) == (202, {"accepted": 30})
    # ... and the suffix from 10 (an envelope boundary), as sw.Client names it after a 429
    r = httpx.post(
        url, content=_body(range(10, 30)), headers={**key, "idempotency-key": "send-1+10"}
    )
    assert r.status_code == 202
    worker = _start_worker(server.url, out)
    procs.append(worker)
    seen = _wait_for(out, set(range(30)), timeout=30)
    assert _wait_empty(server.url) == 0
    time.sleep(0.5)  # anything stored twice would be processed by now
    seen = _processed(out)
    assert seen == Counter(range(30))


def test_broker_restart_mid_run_loses_nothing_acknowledged(
    server: NatsServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A broker restart (same store) under load loses nothing that was acknowledged.

    Every event of a 202 (or an accepted prefix) is processed; requests during the outage
    are refused (429), never answered 202 without a store.
    """
    out = tmp_path / "processed"
    port = _free_port()
    procs.append(_serve(server.url, port, tmp_path))
    procs.append(_start_worker(server.url, out))
    load = Load(port, seconds=20)
    time.sleep(1.5)
    server.stop()
    time.sleep(1.0)
    restarted = NatsServer(server.store, port=server.port)
    server.proc = restarted.proc
    deadline = time.monotonic() + 15
    count = len(load.accepted)
    while len(load.accepted) == count:  # accepted again after the restart
        assert time.monotonic() < deadline, f"no 202 after the restart: {load.statuses}"
        time.sleep(0.1)
    time.sleep(0.5)
    load.join()
    assert load.statuses[429] + load.statuses[503] > 0  # the outage was seen
    accepted = set(load.accepted)
    seen = _wait_for(out, accepted, timeout=60)
    missing = accepted - set(seen)
    assert not missing, f"{len(missing)} accepted events never processed"


def test_envelopes_are_the_same_for_a_resend_and_for_a_suffix() -> None:
    """The split is deterministic, and ``<key>+<k>`` (k on a boundary) gives the tail's ids."""
    events = [{"n": i} for i in range(25)]
    whole = split_envelopes([dict(e) for e in events], "k", 10, 1 << 20)
    assert [(i, c) for i, _, c in whole] == [("k:0", 10), ("k:10", 10), ("k:20", 5)]
    again = split_envelopes([dict(e) for e in events], "k", 10, 1 << 20)
    assert again == whole
    suffix = split_envelopes([dict(e) for e in events[10:]], "k+10", 10, 1 << 20)
    assert suffix == whole[1:]
    first = orjson.loads(whole[0][1])
    assert first["id"] == "k:0"
    assert first["events"][3] == {"n": 3, "id": "k:0-3"}


def test_a_factory_with_nats_is_refused(tmp_path: Path) -> None:
    """``serve myapp:make --nats URL`` is one line and exit 2: the handler runs in workers."""
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "serve", "x:y", "--nats", "nats://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--nats takes no pipeline factory" in done.stderr


def test_serve_nats_without_a_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """No server at start-up: one line naming the stream and URL, no traceback, status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "serve", "--nats", f"nats://127.0.0.1:{_free_port()}"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot set up stream SLUICEWAY" in lines[0]


def test_sw_client_sends_everything_through_a_small_stream(
    server: NatsServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """``sw.Client`` works unchanged: it resends refused suffixes until all is stored.

    The stream holds 20 envelopes of 100 events; one send of 5,000 events is refused in
    part (429) and resent, and every event is handled.
    """
    out = tmp_path / "processed"
    port = _free_port()
    extra = ("--max-msgs", "20", "--envelope-events", "100")
    procs.append(_serve(server.url, port, tmp_path, *extra))
    procs.append(_start_worker(server.url, out))
    n = 5000
    with sw.Client(f"http://127.0.0.1:{port}") as client:
        result = client.send([{"n": i} for i in range(n)])
    assert result.accepted == n
    assert result.throttled > 0  # the stream's limit pushed back, and the client resent
    seen = _wait_for(out, set(range(n)), timeout=30)
    assert set(seen) == set(range(n))


def test_priority_bodies_go_to_the_priority_subject(
    server: NatsServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """``X-Priority: 1`` publishes to ``<subject>.priority``; other bodies to ``<subject>``."""
    port = _free_port()
    procs.append(_serve(server.url, port, tmp_path))
    url = f"http://127.0.0.1:{port}/v1/events"
    assert httpx.post(url, content=_body([1]), headers=NDJSON).status_code == 202
    r = httpx.post(url, content=_body([2]), headers={**NDJSON, "x-priority": "1"})
    assert r.status_code == 202

    async def subjects() -> dict[int, str | None]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        got = {}
        for seq in (1, 2):
            msg = await js.get_msg("SLUICEWAY", seq)
            got[orjson.loads(msg.data or b"")["events"][0]["n"]] = msg.subject
        await nc.close()
        return got

    assert asyncio.run(subjects()) == {1: "sluiceway.events", 2: "sluiceway.events.priority"}


def test_only_a_canonical_positive_suffix_counts_as_an_offset() -> None:
    """``order`` and ``order+0``, ``x+1`` and ``x+01``: distinct keys, distinct envelope ids.

    Only ``+[1-9][0-9]*`` is a suffix: any other key is a base of its own, so two different
    bodies never share a ``Nats-Msg-Id`` (JetStream would drop the second as a duplicate).
    """

    def ids(key: str) -> list[str]:
        return [i for i, _, _ in split_envelopes([{"n": 1}], key, 10, 1 << 20)]

    assert ids("order") == ["order:0"]
    assert ids("order+0") != ids("order")
    assert ids("x+1") == ["x:1"]  # a suffix: counts from x's start
    assert ids("x+01") != ids("x+1")
    assert ids("x+007") != ids("x:7")
    assert ids("x+007") != ids("x+7")
    assert len({ids(k)[0] for k in ("a", "a+0", "a+00", "a+01", "a+1", "a+-1")}) == 6


def test_a_large_body_is_parsed_and_split_off_the_event_loop(server: NatsServer) -> None:
    """``serve --nats``: while a body over 256 KiB is parsed, /healthz answers within 1 s."""
    from sluiceway._durable import StreamLimits, durable_ingest_app
    from tests.test_http import Running

    slow = threading.Event()

    def validate(event: Any) -> None:
        if event.get("n") == 0:
            slow.set()
            time.sleep(2.0)  # a slow parse of a big body: the loop must stay free

    app = durable_ingest_app(server.url, limits=StreamLimits(), validate=validate)
    r = Running(app)
    try:
        body = _body(range(30_000))
        assert len(body) > 256 * 1024
        done: dict[str, int] = {}

        def post() -> None:
            resp = httpx.post(f"{r.url}/v1/events", content=body, headers=NDJSON, timeout=30)
            done["status"] = resp.status_code

        thread = threading.Thread(target=post)
        thread.start()
        assert slow.wait(10)
        started = time.monotonic()
        assert httpx.get(f"{r.url}/healthz", timeout=10).status_code == 200
        assert time.monotonic() - started < 1.0
        thread.join(30)
        assert done["status"] == 202
    finally:
        r.stop()


def _serve_fails(url: str, tmp_path: Path, *extra: str) -> str:
    """Run ``serve --nats url ...`` expecting it to stop at start-up; its one stderr line."""
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "serve", "--nats", url,
         "--port", str(_free_port()), *extra],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_an_existing_stream_without_the_subject_is_refused_at_start_up(
    server: NatsServer, tmp_path: Path
) -> None:
    """``--subject orders`` against a stream that carries only ``sluiceway.events``: exit 2.

    Before, the server started and answered 429 to every request.
    """

    async def create() -> None:
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(
            name="SLUICEWAY", subjects=["sluiceway.events", "sluiceway.events.priority"]
        )
        await nc.close()

    asyncio.run(create())
    line = _serve_fails(server.url, tmp_path, "--subject", "orders")
    assert "SLUICEWAY" in line
    assert "orders" in line
    assert "does not carry" in line


@pytest.mark.parametrize("subject", ["a b", "x.>", "x.*", "a..b", ""])
def test_a_bad_subject_is_one_clear_line(server: NatsServer, tmp_path: Path, subject: str) -> None:
    """A subject one cannot publish to (whitespace, a wildcard, an empty token): exit 2."""
    line = _serve_fails(server.url, tmp_path, "--stream", "FRESH", "--subject", subject)
    assert "not a subject to publish to" in line
    assert "err_code" not in line
