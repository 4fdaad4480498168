"""The HTTP ingest service against a real uvicorn server on loopback, and its clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

import sluiceway as sw
from sluiceway._idempotency import Answer, IdempotencyStore, Ticket
from sluiceway.http import ingest_app

from .conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent
NDJSON = {"content-type": "application/x-ndjson"}


class Running:
    """A uvicorn server in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        """Bind 127.0.0.1:0 and serve ``app`` until ``stop``."""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        """Shut down (drains the pipeline via lifespan)."""
        self.server.should_exit = True
        self.thread.join(WAIT)
        self.sock.close()


class Gate:
    """A handler that records events and can be held shut."""

    def __init__(self) -> None:
        """Open, empty."""
        self.open = threading.Event()
        self.open.set()
        self.seen: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        """Wait while shut, then record."""
        self.open.wait(WAIT)
        with self.lock:
            self.seen.extend(batch)


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Running, sw.Pipeline]]]:
    """Start a server around a pipeline built by the test; stop them all afterwards."""
    running: list[Running] = []

    def start(pipeline: sw.Pipeline, **options: Any) -> tuple[Running, sw.Pipeline]:
        r = Running(ingest_app(pipeline, **options))
        running.append(r)
        return r, pipeline

    yield start
    for r in running:
        r.stop()


def _ndjson(ids: range | list[int]) -> bytes:
    return b"".join(b'{"id": %d}\n' % i for i in ids)


def test_json_and_ndjson_are_admitted_with_202(serve: Any) -> None:
    """Both body formats are parsed, admitted, answered 202 and handled."""
    gate = Gate()
    r, p = serve(sw.Pipeline(gate, max_delay=0.001))
    a = httpx.post(f"{r.url}/v1/events", json=[{"id": 1}, {"id": 2}])
    b = httpx.post(f"{r.url}/v1/events", content=_ndjson([3, 4, 5]), headers=NDJSON)
    assert (a.status_code, a.json()) == (202, {"accepted": 2})
    assert (b.status_code, b.json()) == (202, {"accepted": 3})
    assert p.wait_idle(WAIT)
    assert sorted(e["id"] for e in gate.seen) == [1, 2, 3, 4, 5]


def test_429_accepts_a_prefix_with_retry_after(serve: Any) -> None:
    """With room for 3 of 5, the first 3 are admitted and the answer says so."""
    gate = Gate()
    gate.open.clear()
    r, _ = serve(sw.Pipeline(gate, shards=1, capacity=3, batch_size=8), retry_after=2)
    resp = httpx.post(f"{r.url}/v1/events", content=_ndjson(range(5)), headers=NDJSON)
    assert resp.status_code == 429
    assert resp.json() == {"accepted": 3}
    assert resp.headers["retry-after"] == "2"
    gate.open.set()


def test_client_resends_exactly_the_refused_suffix(serve: Any) -> None:
    """Under a stalled handler no event is lost and none is duplicated."""
    gate = Gate()
    gate.open.clear()
    r, p = serve(sw.Pipeline(gate, shards=2, capacity=40, batch_size=8, max_delay=0.001))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the client's back-off: let the handler move on
        sleeps.append(seconds)
        gate.open.set()
        time.sleep(0.02)

    events = [{"id": i} for i in range(300)]
    with sw.Client(r.url, sleep=sleep) as client:
        result = client.send(events)
    assert result.accepted == 300
    assert result.throttled >= 1
    assert sleeps
    assert p.wait_idle(WAIT)
    ids = [e["id"] for e in gate.seen]
    assert sorted(ids) == list(range(300))  # all of them, once each


def test_bad_line_is_named_and_nothing_is_admitted(serve: Any) -> None:
    """Malformed NDJSON: 400 naming the first bad line; not even the good lines count."""
    r, p = serve(sw.Pipeline(Gate()))
    body = b'{"id": 1}\n{"id": 2}\n{"id": oops}\n{"id": 4}\n'
    resp = httpx.post(f"{r.url}/v1/events", content=body, headers=NDJSON)
    assert resp.status_code == 400
    assert resp.json()["line"] == 3
    array = httpx.post(f"{r.url}/v1/events", json=[{"id": 1}, 7])
    assert (array.status_code, array.json()["line"]) == (400, 2)
    assert p.stats().accepted == 0


def test_size_type_auth_and_draining(serve: Any) -> None:
    """413 over max_body, 415 for other types, 401 without the token, 503 while draining."""
    r, p = serve(sw.Pipeline(Gate()), max_body=100, token="s3cret")
    auth = {"authorization": "Bearer s3cret"}
    big = httpx.post(f"{r.url}/v1/events", content=_ndjson(range(50)), headers={**NDJSON, **auth})
    assert big.status_code == 413
    typed = httpx.post(
        f"{r.url}/v1/events", content=b"x", headers={"content-type": "text/plain", **auth}
    )
    assert typed.status_code == 415
    anon = httpx.post(f"{r.url}/v1/events", json=[{"id": 1}])
    assert anon.status_code == 401
    wrong = httpx.post(
        f"{r.url}/v1/events", json=[{"id": 1}], headers={"authorization": "Bearer no"}
    )
    assert wrong.status_code == 401
    ok = httpx.post(f"{r.url}/v1/events", json=[{"id": 1}], headers=auth)
    assert ok.status_code == 202
    assert httpx.get(f"{r.url}/readyz").status_code == 200
    p.shutdown()
    draining = httpx.post(f"{r.url}/v1/events", json=[{"id": 2}], headers=auth)
    assert draining.status_code == 503
    assert httpx.get(f"{r.url}/readyz").status_code == 503
    assert httpx.get(f"{r.url}/healthz").status_code == 200


def test_wait_true_answers_after_the_outcome(serve: Any) -> None:
    """?wait=true answers once the events are processed, with the counts."""
    calls: list[int] = []

    def handler(batch: list[Any]) -> None:
        if any(e.get("bad") for e in batch):
            raise ValueError("bad event")
        calls.append(len(batch))

    r, _ = serve(sw.Pipeline(handler, shards=1, batch_size=2, max_delay=0.001))
    ok = httpx.post(f"{r.url}/v1/events?wait=true", json=[{"id": 1}, {"id": 2}, {"id": 3}])
    assert ok.status_code == 202
    assert ok.json() == {"accepted": 3, "processed": 3, "dead_lettered": 0}
    bad = httpx.post(f"{r.url}/v1/events?wait=true", json=[{"bad": True}])
    assert bad.json() == {"accepted": 1, "processed": 0, "dead_lettered": 1}


def test_priority_header_uses_the_priority_lane(serve: Any) -> None:
    """X-Priority: 1 sends the request's events down the priority lane."""
    urgent: list[Any] = []
    r, p = serve(sw.Pipeline(Gate(), priority_handler=urgent.append))
    resp = httpx.post(f"{r.url}/v1/events?wait=true", json=[{"id": 9}], headers={"x-priority": "1"})
    assert resp.status_code == 202
    assert urgent == [{"id": 9}]
    assert p.stats().priority_accepted == 1


def test_metrics_endpoint(serve: Any) -> None:
    """/metrics serves this pipeline's Prometheus metrics."""
    r, _ = serve(sw.Pipeline(Gate()))
    httpx.post(f"{r.url}/v1/events", json=[{"id": 1}])
    body = httpx.get(f"{r.url}/metrics").text
    assert 'sluiceway_items_accepted_total{lane="regular",pipeline="http"} 1.0' in body


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[str, sw.Pipeline]]:
    """One server for the fuzz examples."""
    p = sw.Pipeline(lambda b: None, capacity=1_000_000)
    r = Running(ingest_app(p, max_body=4096))
    yield r.url, p
    r.stop()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.one_of(st.just(b'{"id": 1}'), st.binary(max_size=20), st.just(b"[1]"), st.just(b"")),
            max_size=8,
        ).map(b"\n".join),
    ),
    ctype=st.sampled_from(["application/json", "application/x-ndjson"]),
)
def test_fuzzed_bodies_never_5xx_and_never_half_admitted(
    fuzz_server: tuple[str, sw.Pipeline], body: bytes, ctype: str
) -> None:
    """Whatever the body: no 5xx, and a 400 admits nothing, a 202 admits everything."""
    url, p = fuzz_server
    before = p.stats().accepted
    resp = httpx.post(f"{url}/v1/events", content=body, headers={"content-type": ctype})
    assert resp.status_code < 500
    after = p.stats().accepted
    if resp.status_code == 400:
        assert after == before
    else:
        assert resp.status_code == 202
        assert after - before == resp.json()["accepted"]


def test_client_breaker_fails_fast_then_probes() -> None:
    """Against a dead endpoint the client opens its breaker and later probes again."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there: connection refused
    now = [0.0]
    client = sw.Client(
        url,
        sleep=lambda s: None,
        now=lambda: now[0],
        breaker_failures=3,
        breaker_cooldown=10.0,
        max_attempts=3,
    )
    with pytest.raises(sw.SluicewayError, match="gave up"):
        client.send([{"id": 1}])
    with pytest.raises(sw.CircuitOpen) as info:
        client.send([{"id": 1}])
    assert info.value.retry_after == pytest.approx(10.0)
    now[0] = 10.0  # cool-down over: one probe goes out, fails, and re-opens the circuit
    with pytest.raises(sw.CircuitOpen) as again:
        client.send([{"id": 1}])
    assert again.value.retry_after == pytest.approx(10.0)  # a fresh cool-down from t=10
    assert client.policy.consecutive == 4  # three failures, then the failed probe
    client.close()


def test_client_rejects_4xx_with_a_typed_error(serve: Any) -> None:
    """A 401 is not retried: it raises sw.Rejected with the status."""
    r, _ = serve(sw.Pipeline(Gate()), token="t")
    with sw.Client(r.url) as client, pytest.raises(sw.Rejected) as info:
        client.send([{"id": 1}])
    assert info.value.status == 401
    assert f"HTTP 401 from {r.url}/v1/events" in str(info.value)


def test_async_client_sends_and_waits(serve: Any) -> None:
    """The asyncio client delivers and reports processed counts with wait=True."""
    gate = Gate()
    r, _ = serve(sw.Pipeline(gate, max_delay=0.001))

    async def main() -> sw.SendResult:
        async with sw.AsyncClient(r.url) as client:
            return await client.send([{"id": i} for i in range(50)], wait=True)

    result = asyncio.run(main())
    assert (result.accepted, result.processed, result.dead_lettered) == (50, 50, 0)


def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    """A 2-worker server gets SIGTERM mid-load: every 202'd event was processed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "processed"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SLUICEWAY_TEST_OUT": str(out),
        "SLUICEWAY_TEST_DELAY": "0.01",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "serve", "tests.serve_app:factory",
         "--workers", "2", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.05)
        accepted: list[int] = []
        with httpx.Client() as http:
            for n in range(20):
                ids = range(n * 100, n * 100 + 100)
                resp = http.post(f"{url}/v1/events", content=_ndjson(ids), headers=NDJSON)
                k = resp.json().get("accepted", 0) if resp.status_code in (202, 429) else 0
                accepted.extend(list(ids)[:k])
        # Metrics of the two workers are summed: /metrics on either shows the total admitted.
        deadline = time.monotonic() + 20
        total = -1.0
        while total != len(accepted) and time.monotonic() < deadline:
            time.sleep(0.2)
            body = httpx.get(f"{url}/metrics").text
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.splitlines()
                if line.startswith("sluiceway_items_accepted_total") and 'lane="regular"' in line
            )
        assert total == len(accepted)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    processed: list[int] = []
    for f in tmp_path.glob("processed-*"):
        processed.extend(int(x) for x in f.read_text().split())
    assert len(accepted) >= 1000
    assert sorted(processed) == sorted(accepted)


def test_a_failing_key_is_a_400_and_leaks_no_capacity(serve: Any) -> None:
    """A body with one event lacking the key: 400 naming it, nothing admitted.

    An idle keyed pipeline of capacity 8 still admits 8 events after several such bodies.
    """
    gate = Gate()
    gate.open.clear()
    r, p = serve(sw.Pipeline(gate, shards=1, capacity=8, key=lambda e: e["k"]))
    good = b"".join(b'{"k": %d}\n' % i for i in range(5))
    for query in ("", "?wait=true", ""):
        bad = httpx.post(f"{r.url}/v1/events{query}", content=good + b'{"id": 9}\n', headers=NDJSON)
        assert bad.status_code == 400
        assert (bad.json()["line"], bad.json()["index"]) == (6, 5)
        assert "key function" in bad.json()["error"]
    array = httpx.post(f"{r.url}/v1/events", json=[{"k": 1}, {"k": [1]}])
    assert (array.status_code, array.json()["line"]) == (400, 2)
    assert p.stats().accepted == 0
    full = httpx.post(f"{r.url}/v1/events", content=_ndjson(range(8)).replace(b"id", b"k"),
                      headers=NDJSON)  # fmt: skip
    assert (full.status_code, full.json()) == (202, {"accepted": 8})
    gate.open.set()


def test_mounted_app_starts_on_first_use(serve: Any) -> None:
    """Mounted without the host including its lifespan, the app starts its pipeline lazily.

    A readiness probe starts it too, so that a probe never holds traffic back for ever.
    """
    gate = Gate()
    posted, probed = ingest_app(lambda: sw.Pipeline(gate)), ingest_app(lambda: sw.Pipeline(gate))
    servers = [Running(Starlette(routes=[Mount("/ingest", app=a)])) for a in (posted, probed)]
    try:
        assert httpx.get(f"{servers[1].url}/ingest/readyz").status_code == 200
        url = f"{servers[0].url}/ingest"
        resp = httpx.post(f"{url}/v1/events?wait=true", json=[{"id": 1}])
        assert (resp.status_code, resp.json()["processed"]) == (202, 1)
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        for server, app in zip(servers, (posted, probed), strict=True):
            server.stop()
            app.state.sluiceway.pipeline.shutdown()  # no lifespan ran to do it
    assert gate.seen == [{"id": 1}]


def test_host_lifespan_drains_the_mounted_pipeline() -> None:
    """With the app's lifespan in the host's, the host's shutdown drains the pipeline."""
    gate = Gate()
    gate.open.clear()
    pipelines: list[sw.Pipeline] = []

    def factory() -> sw.Pipeline:
        pipelines.append(sw.Pipeline(gate, shards=2, batch_size=8))
        return pipelines[-1]

    ingest = ingest_app(factory)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with ingest.router.lifespan_context(app):
            yield

    r = Running(Starlette(routes=[Mount("/ingest", app=ingest)], lifespan=lifespan))
    resp = httpx.post(f"{r.url}/ingest/v1/events", content=_ndjson(range(100)), headers=NDJSON)
    assert resp.status_code == 202
    assert not pipelines[0].closed
    gate.open.set()
    r.stop()
    assert pipelines[0].closed
    assert sorted(e["id"] for e in gate.seen) == list(range(100))


def _raw_post(url: str, length: int, body: bytes) -> socket.socket:
    """Open a connection and send a POST's headers declaring ``length`` and ``body``."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=WAIT)
    head = (
        f"POST /v1/events HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-ndjson\r\n"
        f"content-length: {length}\r\n\r\n"
    )
    conn.sendall(head.encode() + body)
    return conn


def _raw_answer(conn: socket.socket) -> str:
    """The status line and headers the server sent back on ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, "connection closed before an answer"
        data += chunk
    return data.decode("latin-1").lower()


def test_bytes_in_flight_are_capped_without_reading_the_body(serve: Any) -> None:
    """Beyond max_inflight_bytes of bodies being read, a request gets 503 and Retry-After.

    The answer comes before its body is sent; once the first body is read, room is back.
    """
    r, _ = serve(sw.Pipeline(Gate()), max_inflight_bytes=1000)
    ingest = r.server.config.app.state.sluiceway
    first_body = _ndjson(range(70))  # 760 bytes
    slow = _raw_post(r.url, len(first_body), first_body[:100])  # the rest comes later
    deadline = time.monotonic() + WAIT
    while ingest.inflight_bytes == 0:  # the server is reading the slow body
        assert time.monotonic() < deadline
        time.sleep(0.01)
    blocked = _raw_post(r.url, 500, b"")  # headers only: the body is never sent
    answer = _raw_answer(blocked)
    assert answer.startswith("http/1.1 503")
    assert "retry-after: 1" in answer
    blocked.close()
    slow.sendall(first_body[100:])
    assert _raw_answer(slow).startswith("http/1.1 202")
    slow.close()
    after = httpx.post(f"{r.url}/v1/events", content=_ndjson(range(40)), headers=NDJSON)
    assert after.status_code == 202
    assert ingest.inflight_bytes == 0


def test_protect_metrics_requires_the_token(serve: Any) -> None:
    """With protect_metrics, /metrics answers 401 without the bearer token, 200 with it."""
    r, _ = serve(sw.Pipeline(Gate()), token="s3cret", protect_metrics=True)
    assert httpx.get(f"{r.url}/metrics").status_code == 401
    ok = httpx.get(f"{r.url}/metrics", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert "sluiceway_items_accepted_total" in ok.text
    assert httpx.get(f"{r.url}/healthz").status_code == 200  # probes stay open
    with pytest.raises(ValueError, match="protect_metrics needs a token"):
        ingest_app(sw.Pipeline(Gate()), protect_metrics=True)


@pytest.mark.parametrize("client_kind", ["sync", "async"])
def test_slow_handler_and_short_client_timeout_handle_each_event_once(
    serve: Any, client_kind: str
) -> None:
    """A wait=True send outlasting the client's timeout handles each event once (both clients).

    The resends carry the same Idempotency-Key: the server answers them from the first
    request, never admitting the events again.
    """
    handled: list[Any] = []

    def slow(batch: list[Any]) -> None:
        time.sleep(0.4)
        handled.extend(batch)

    r, p = serve(sw.Pipeline(slow, shards=1, batch_size=64, max_delay=0.001))
    events = [{"id": i} for i in range(10)]
    if client_kind == "sync":
        with sw.Client(r.url, timeout=0.1, breaker_failures=100) as client:
            result = client.send(events, wait=True)
    else:

        async def main() -> sw.SendResult:
            async with sw.AsyncClient(r.url, timeout=0.1, breaker_failures=100) as client:
                return await client.send(events, wait=True)

        result = asyncio.run(main())
    assert result.failures >= 1  # the client did time out and resend
    assert (result.accepted, result.processed, result.dead_lettered) == (10, 10, 0)
    assert sorted(e["id"] for e in handled) == list(range(10))  # once each
    assert p.stats().accepted == 10


def test_repeated_idempotency_key_is_answered_from_memory(serve: Any) -> None:
    """A repeat of a key gets the first answer without admitting again.

    The store keeps only the newest ``idempotency_keys`` keys.
    """
    r, p = serve(sw.Pipeline(Gate()), idempotency_keys=3)
    keys = r.server.config.app.state.sluiceway.keys

    def post(key: str, ids: list[int]) -> httpx.Response:
        headers = {**NDJSON, "idempotency-key": key}
        return httpx.post(f"{r.url}/v1/events", content=_ndjson(ids), headers=headers)

    for n in range(5):
        assert post(f"k{n}", [n, n]).json() == {"accepted": 2}
    assert len(keys) == 3
    again = post("k4", [4, 4, 4])  # same key, even another body: the stored answer
    assert (again.status_code, again.json()) == (202, {"accepted": 2})
    assert again.headers["idempotent-replayed"] == "true"
    assert p.stats().accepted == 10
    forgotten = post("k0", [0, 0])  # pushed out by newer keys: admitted again
    assert "idempotent-replayed" not in forgotten.headers
    assert p.stats().accepted == 12
    assert len(keys) == 3
    bad = post("x" * 201, [1])
    assert bad.status_code == 400


def test_key_that_admitted_nothing_is_not_remembered(serve: Any) -> None:
    """A 400 or a 429 that admitted nothing is not stored: fixing and resending works."""
    gate = Gate()
    gate.open.clear()
    r, p = serve(sw.Pipeline(gate, shards=1, capacity=2))
    headers = {**NDJSON, "idempotency-key": "k"}
    bad = httpx.post(f"{r.url}/v1/events", content=b"{oops}\n", headers=headers)
    assert bad.status_code == 400
    ok = httpx.post(f"{r.url}/v1/events", content=_ndjson([1, 2]), headers=headers)
    assert (ok.status_code, ok.json()) == (202, {"accepted": 2})
    headers["idempotency-key"] = "full"
    refused = httpx.post(f"{r.url}/v1/events", content=_ndjson([3]), headers=headers)
    assert (refused.status_code, refused.json()) == (429, {"accepted": 0})
    gate.open.set()
    assert p.wait_idle(WAIT)
    retried = httpx.post(f"{r.url}/v1/events", content=_ndjson([3]), headers=headers)
    assert (retried.status_code, retried.json()) == (202, {"accepted": 1})


def test_idempotency_store_forgets_after_its_ttl() -> None:
    """Keys older than ``ttl`` seconds are forgotten (on the store's own clock)."""
    now = [0.0]
    store = IdempotencyStore(max_keys=10, ttl=300.0, now=lambda: now[0])

    async def main() -> None:
        ticket = await store.claim("a")
        assert isinstance(ticket, Ticket)
        ticket.finish(Answer(202, {"accepted": 1}, {}))
        now[0] = 299.0
        assert await store.claim("a") == Answer(202, {"accepted": 1}, {})
        now[0] = 300.5
        assert isinstance(await store.claim("a"), Ticket)  # expired: a fresh claim
        assert len(store) == 1

    asyncio.run(main())


def test_client_gives_up_naming_the_cause_and_the_url() -> None:
    """After max_attempts the error says what went wrong and where."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    with (
        sw.Client(url, sleep=lambda s: None, max_attempts=2) as client,
        pytest.raises(sw.SluicewayError) as info,
    ):
        client.send([{"id": 1}])
    message = str(info.value)
    assert f"{url}/v1/events" in message
    assert "ConnectError" in message


def test_client_repr_shows_the_url_not_the_token() -> None:
    """Both clients' repr names the endpoint and leaves the bearer token out."""
    with sw.Client("http://127.0.0.1:8000/", token="s3cret") as client:
        text = repr(client)
    assert text == "Client(url='http://127.0.0.1:8000/v1/events', timeout=10.0)"

    async def main() -> str:
        async with sw.AsyncClient("http://127.0.0.1:8000", token="s3cret", timeout=2) as c:
            return repr(c)

    atext = asyncio.run(main())
    assert atext == "AsyncClient(url='http://127.0.0.1:8000/v1/events', timeout=2)"
    assert "s3cret" not in text + atext


def test_client_keys_suffixes_and_counts_events_held_by_a_503() -> None:
    """Retries keep the send's key; the suffix after k accepted events gets ``key+k``.

    A 503 saying ``accepted: k`` (a ?wait=true open at a drain) counts those k as held.
    """
    seen: list[tuple[str, list[int]]] = []
    script = [
        (500, {"error": "boom"}),  # retried with the same key
        (429, {"accepted": 2}),  # the suffix from 2 gets key+2
        (503, {"accepted": 3, "processed": 0, "dead_lettered": 0, "error": "draining"}),
        (202, {"accepted": 5, "processed": 5, "dead_lettered": 0}),
    ]

    async def events(request: Request) -> Response:
        ids = [orjson.loads(line)["id"] for line in (await request.body()).splitlines()]
        seen.append((request.headers["idempotency-key"], ids))
        status, body = script[len(seen) - 1]
        return Response(orjson.dumps(body), status, headers={"retry-after": "0"})

    r = Running(Starlette(routes=[Route("/v1/events", events, methods=["POST"])]))
    try:
        with sw.Client(r.url, sleep=lambda s: None) as client:
            result = client.send([{"id": i} for i in range(10)], wait=True)
    finally:
        r.stop()
    key = seen[0][0]
    assert [k for k, _ in seen] == [key, key, f"{key}+2", f"{key}+5"]
    assert [ids[0] for _, ids in seen] == [0, 0, 2, 5]
    assert (result.accepted, result.requests, result.failures) == (10, 4, 2)
    assert result.processed == 5  # the held 3 had no outcome yet when the drain answered


def test_a_whole_send_repeated_with_its_key_is_not_admitted_twice(serve: Any) -> None:
    """``send(events, key=k)`` twice (say, after an exception): the server admits them once."""
    gate = Gate()
    r, p = serve(sw.Pipeline(gate, max_delay=0.001))
    events = [{"id": i} for i in range(5)]
    with sw.Client(r.url) as client:
        first = client.send(events, key="order-42")
        again = client.send(events, key="order-42")
    assert first.accepted == again.accepted == 5
    assert p.wait_idle(WAIT)
    assert p.stats().accepted == 5
    assert sorted(e["id"] for e in gate.seen) == list(range(5))


def test_a_body_not_sent_in_time_gets_408_and_releases_its_reservation(serve: Any) -> None:
    """Slowloris: a body declared large but never sent is cut off after ``body_timeout``.

    A connection declares a body that fills ``max_inflight_bytes`` and sends one byte: others
    get 503 meanwhile; it gets 408 once the timeout passes, and the bytes it reserved are
    free again: a normal POST is admitted.
    """
    r, _ = serve(sw.Pipeline(Gate()), max_inflight_bytes=1000, body_timeout=0.5)
    ingest = r.server.config.app.state.sluiceway
    started = time.monotonic()
    slow = _raw_post(r.url, 900, b"{")
    deadline = time.monotonic() + WAIT
    while ingest.inflight_bytes == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    blocked = _raw_post(r.url, 500, b"")
    assert _raw_answer(blocked).startswith("http/1.1 503")
    blocked.close()
    answer = _raw_answer(slow)
    slow.close()
    assert answer.startswith("http/1.1 408"), answer
    assert 0.4 < time.monotonic() - started < WAIT
    deadline = time.monotonic() + WAIT
    while ingest.inflight_bytes:
        assert time.monotonic() < deadline, "the reservation was not released"
        time.sleep(0.01)
    after = httpx.post(f"{r.url}/v1/events", content=_ndjson(range(40)), headers=NDJSON)
    assert after.status_code == 202


def test_a_client_aborting_mid_body_logs_no_traceback(serve: Any) -> None:
    """A client that closes its connection mid-body: no error logged, reservation released."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    r, _ = serve(sw.Pipeline(Gate()))  # (uvicorn configures its loggers as it starts)
    handler = Keep(logging.DEBUG)
    watched = [logging.getLogger(n) for n in ("uvicorn.error", "sluiceway.http", "sluiceway")]
    for logger in watched:
        logger.addHandler(handler)
    try:
        ingest = r.server.config.app.state.sluiceway
        for _ in range(5):
            conn = _raw_post(r.url, 100, b'[{"id":')
            time.sleep(0.05)
            conn.close()
        deadline = time.monotonic() + WAIT
        while ingest.inflight_bytes:
            assert time.monotonic() < deadline, "the reservation was not released"
            time.sleep(0.01)
        time.sleep(0.2)
        after = httpx.post(f"{r.url}/v1/events", content=_ndjson(range(3)), headers=NDJSON)
        assert after.status_code == 202
    finally:
        for logger in watched:
            logger.removeHandler(handler)
    assert not [x for x in records if x.levelno >= logging.WARNING or x.exc_info], records


def test_a_large_body_is_parsed_off_the_event_loop(serve: Any) -> None:
    """While a large body (over 256 KiB) is parsed and validated, /healthz answers promptly."""
    slow = threading.Event()

    def validate(event: Any) -> None:
        if event.get("id") == 0:
            slow.set()
            time.sleep(2.0)  # a slow validation of a big body: the loop must stay free

    r, _ = serve(sw.Pipeline(Gate()), validate=validate)
    body = _ndjson(range(30_000))
    assert len(body) > 256 * 1024
    done: dict[str, int] = {}

    def post() -> None:
        resp = httpx.post(f"{r.url}/v1/events", content=body, headers=NDJSON, timeout=WAIT)
        done["status"] = resp.status_code

    thread = threading.Thread(target=post)
    thread.start()
    assert slow.wait(WAIT)
    started = time.monotonic()
    assert httpx.get(f"{r.url}/healthz", timeout=WAIT).status_code == 200
    assert time.monotonic() - started < 1.0
    thread.join(WAIT)
    assert done["status"] == 202
