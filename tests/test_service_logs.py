"""What ``sluiceway serve`` and ``sluiceway worker`` log, read as ``--log-format json``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_nats import ROOT, NatsServer, _publish, _wait_for
from .test_serve import NDJSON, SCRIPT, free_port, ndjson, user_env, wait_up

FASTAPP = """
import sluiceway as sw


def make():
    return sw.Pipeline(lambda batch: None, shards=2, max_delay=0.001)
"""


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream per test."""
    s = NatsServer(tmp_path / "store")
    yield s
    s.stop()


def records(text: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object (the test fails on a line that is not one)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            assert {"time", "level", "logger", "message"} <= set(record), line
            out.append(record)
    return out


def having(logged: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    """The records whose message contains ``words``."""
    return [r for r in logged if words in r["message"]]


def serve_json(cwd: Path, workers: int) -> tuple[subprocess.Popen[bytes], str, int]:
    """``sluiceway serve fastapp:make --log-format json`` in ``cwd``, up and answering."""
    (cwd / "fastapp.py").write_text(FASTAPP)
    port = free_port()
    proc = subprocess.Popen(
        [SCRIPT, "serve", "fastapp:make", "--port", str(port), "--workers", str(workers),
         "--log-format", "json", "--dead-letters", str(cwd / "dead.jsonl")],
        cwd=cwd, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return proc, url, port


def test_serve_logs_where_it_listens_and_both_ends_of_each_drain_as_json(tmp_path: Path) -> None:
    """Two workers: every stderr line is JSON; the listen line, then per worker drain lines.

    The drain lines carry the counts as fields: the workers' ``accepted`` add up to what was
    sent, and every event is ``processed``.
    """
    proc, url, port = serve_json(tmp_path, workers=2)
    sent = 0
    try:
        for n in range(6):  # a connection each, spread over the workers
            resp = httpx.post(
                f"{url}/v1/events?wait=true", content=ndjson(range(n * 10, n * 10 + 10)),
                headers=NDJSON,
            )  # fmt: skip
            sent += resp.json()["processed"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = records(proc.communicate()[1].decode())
    (listen,) = having(logged, "listening on")
    assert listen["logger"] == "sluiceway.serve"
    assert listen["level"] == "INFO"
    assert (listen["url"], listen["port"], listen["workers"]) == (url, port, 2)
    assert listen["factory"] == "fastapp:make"
    started = having(logged, "drain started")
    finished = having(logged, "drain finished")
    assert len(started) == len(finished) == 2
    assert {r["pid"] for r in started} == {r["pid"] for r in finished}
    assert all(r["in_flight"] == 0 and r["drain_timeout"] == 30.0 for r in started)
    assert sum(r["accepted"] for r in finished) == sent == 60
    assert sum(r["processed"] for r in finished) == 60
    assert all(r["dead_lettered"] == 0 and r["unfinished"] == 0 for r in finished)
    assert not [r for r in logged if r["level"] == "ERROR"]


def test_serve_logs_a_worker_process_that_dies(tmp_path: Path) -> None:
    """A worker killed with SIGKILL: an ERROR line names its pid and the signal."""
    proc, _, _ = serve_json(tmp_path, workers=2)
    assert proc.stderr is not None
    try:
        pids: list[int] = []
        lines: list[dict[str, Any]] = []
        os.set_blocking(proc.stderr.fileno(), False)
        buffered = b""
        deadline = time.monotonic() + 30

        def read() -> None:
            nonlocal buffered
            buffered += proc.stderr.read() or b""  # type: ignore[union-attr]
            *complete, buffered = buffered.split(b"\n")
            lines.extend(records(b"\n".join(complete).decode()))

        while len(pids) < 2:  # each worker says it serves
            read()
            pids = [r["pid"] for r in having(lines, "serving")]
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)
        while not having(lines, "exited unexpectedly"):
            read()
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        (crash,) = having(lines, "exited unexpectedly")
        assert crash["level"] == "ERROR"
        assert crash["logger"] == "sluiceway.serve"
        assert (crash["pid"], crash["signal"], crash["exitcode"]) == (pids[0], "SIGKILL", -9)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_worker_logs_what_it_consumes_and_both_ends_of_its_drain_as_json(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """``sluiceway worker --log-format json``: the consume line (credentials masked), the drain.

    The consume line names the URL without the password, the stream, the subject and the
    durable consumer; the end-of-drain line counts the acked envelopes and processed events.
    """
    url = nats_server.url.replace("nats://", "nats://alice:s3cret@")
    out = tmp_path / "out"
    metrics_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLUICEWAY_TEST_OUT": str(out)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "worker", "tests.nats_app:factory", "--nats", url,
         "--durable", "logs", "--log-format", "json", "--metrics-port", str(metrics_port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        asyncio.run(_publish(nats_server.url, [{"n": i} for i in range(50)], batch=10))
        assert set(range(50)) <= set(_wait_for(out, set(range(50)), timeout=30))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = proc.communicate()[1].decode()
    assert "s3cret" not in text
    logged = records(text)
    (consume,) = having(logged, "consuming")
    assert consume["logger"] == "sluiceway.nats"
    assert consume["url"] == f"nats://***@127.0.0.1:{nats_server.port}"
    assert (consume["stream"], consume["subject"], consume["durable"]) == (
        "SLUICEWAY", "sluiceway.events", "logs",
    )  # fmt: skip
    (metrics,) = having(logged, "serving metrics on")
    assert metrics["metrics_url"] == f"http://127.0.0.1:{metrics_port}/metrics"
    (start,) = having(logged, "stopping: draining")
    assert start["in_flight"] == 0
    (end,) = having(logged, "stopped:")
    assert (end["acked"], end["processed"], end["dead_lettered"]) == (5, 50, 0)


def test_the_library_installs_no_log_handler() -> None:
    """Importing sluiceway and its integrations leaves logging unconfigured: apps decide."""
    code = (
        "import logging, sluiceway, sluiceway.http, sluiceway.nats, sluiceway._serve, "
        "sluiceway.prometheus, sluiceway.cli\n"
        "loggers = [logging.getLogger(), logging.getLogger('sluiceway')]\n"
        "print(sum(len(x.handlers) for x in loggers))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "0"


def test_log_level_warning_leaves_out_the_info_lines(tmp_path: Path) -> None:
    """``--log-level warning``: no 'connecting to' line, only the failure line remains."""
    port = free_port()  # nobody listens
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "worker", "tests.nats_app:factory", "--nats",
         f"nats://127.0.0.1:{port}", "--connect-timeout", "1", "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SLUICEWAY_TEST_OUT": str(tmp_path / "o")},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "cannot connect" in lines[0]
    assert "connecting to" not in done.stderr


def test_a_failure_is_one_json_line_under_log_format_json(tmp_path: Path) -> None:
    """With --log-format json the one-line failures of serve and worker are JSON records too."""
    (tmp_path / "fastapp.py").write_text(FASTAPP)
    serve = subprocess.run(
        [SCRIPT, "serve", "fastapp:nosuch", "--port", str(free_port()), "--log-format", "json"],
        cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    worker = subprocess.run(
        [sys.executable, "-m", "sluiceway", "worker", "tests.nats_app:factory", "--nats",
         "http://127.0.0.1:4222", "--log-format", "json"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SLUICEWAY_TEST_OUT": str(tmp_path / "o")},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    for done, logger, words in (
        (serve, "sluiceway.serve", "has no attribute 'nosuch'"),
        (worker, "sluiceway.nats", "scheme"),
    ):
        assert done.returncode == 2
        (record,) = records(done.stderr)
        assert (record["level"], record["logger"]) == ("ERROR", logger)
        assert words in record["message"]


def test_serve_nats_logs_where_it_listens_and_publishes_as_json(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """``sluiceway serve --nats`` with --log-format json: the listen line names the stream.

    The NATS URL's credentials are masked; every stderr line is JSON.
    """
    port = free_port()
    url = nats_server.url.replace("nats://", "nats://alice:s3cret@")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "serve", "--nats", url, "--port", str(port),
         "--log-format", "json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/events", json=[{"id": 1}])
        assert resp.status_code == 202
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = proc.communicate()[1].decode()
    assert "s3cret" not in text
    logged = records(text)
    (listen,) = having(logged, "listening on")
    assert (listen["url"], listen["workers"], listen["stream"]) == (
        f"http://127.0.0.1:{port}", 1, "SLUICEWAY",
    )  # fmt: skip
    assert listen["nats_url"] == f"nats://***@127.0.0.1:{nats_server.port}"
    (publishing,) = [r for r in logged if r["message"].startswith("publishing to stream")]
    assert (publishing["stream"], publishing["pid"]) == ("SLUICEWAY", proc.pid)
