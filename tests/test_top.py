"""``sluiceway top`` against real HTTP servers on loopback that fail in every usual way."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import sluiceway as sw
import sluiceway.prometheus as swp

ROOT = Path(__file__).resolve().parent.parent


class Endpoint:
    """An HTTP server on 127.0.0.1 whose answer is set by ``mode``.

    ``metrics``: a real pipeline's metrics; ``404``; ``json`` (application/json); ``json-text``
    (JSON labelled text/plain); ``garbage`` (text/plain that is not the Prometheus format).
    """

    def __init__(self, port: int = 0) -> None:
        """Start serving in a thread (on ``port``, or a free one)."""
        self.mode = "metrics"
        self.registry = CollectorRegistry()
        self.pipeline = sw.Pipeline(lambda b: None, shards=2).start()
        swp.register(self.pipeline, self.registry, name="web")
        for i in range(100):
            assert self.pipeline.submit(i)
        assert self.pipeline.wait_idle(10)
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mode = endpoint.mode
                if mode == "404":
                    self.send_error(404, "Not Found")
                    return
                body, ctype = {
                    "metrics": (generate_latest(endpoint.registry), "text/plain; version=0.0.4"),
                    "json": (b'{"status": "ok"}', "application/json"),
                    "json-text": (b'{"status": "ok"}', "text/plain"),
                    "garbage": (b"\x00\xff this is { not metrics", "text/plain"),
                }[mode]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (the port then refuses connections)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        self.pipeline.shutdown()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A fresh endpoint per test."""
    e = Endpoint()
    yield e
    e.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _top(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluiceway", "top", *args],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("404", "HTTP 404"),
        ("json", "application/json"),
        ("json-text", "Prometheus text format"),
        ("garbage", "Prometheus text format"),
    ],
)
def test_once_bad_answer_is_one_line_and_non_zero(
    endpoint: Endpoint, mode: str, words: str
) -> None:
    """--once against a 404, a JSON body or garbage: one line on stderr, exit status 1."""
    endpoint.mode = mode
    top = _top(endpoint.url, "--once", "--interval", "0.1")
    lines = top.stderr.strip().splitlines()
    assert top.returncode == 1
    assert len(lines) == 1, top.stderr
    assert "unreachable" in lines[0]
    assert words in lines[0]
    assert endpoint.url in lines[0]
    assert top.stdout == ""


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"http://127.0.0.1:{_closed_port()}/metrics", "refused"),
        ("http://no-such-host.invalid:9464/metrics", "no-such-host.invalid"),
    ],
)
def test_once_unreachable_is_one_line_and_non_zero(url: str, words: str) -> None:
    """--once against a closed port or an unknown host: one line on stderr, exit status 1."""
    top = _top(url, "--once", "--interval", "0.1")
    lines = top.stderr.strip().splitlines()
    assert top.returncode == 1
    assert len(lines) == 1, top.stderr
    assert "unreachable" in lines[0]
    assert words in lines[0]


def test_url_without_a_scheme_gets_http(endpoint: Endpoint) -> None:
    """``127.0.0.1:PORT/metrics`` is read as ``http://127.0.0.1:PORT/metrics``."""
    top = _top(f"127.0.0.1:{endpoint.port}/metrics", "--once", "--interval", "0.1")
    assert top.returncode == 0, top.stderr
    assert "pipeline web" in top.stdout
    assert "processed 100" in top.stdout


def test_other_scheme_is_a_one_line_error() -> None:
    """A scheme other than http or https: one line, exit status 2, at once."""
    top = _top("ftp://127.0.0.1:21/metrics", "--once")
    lines = top.stderr.strip().splitlines()
    assert top.returncode == 2
    assert len(lines) == 1, top.stderr
    assert "http://" in lines[0]


def test_live_view_rides_out_errors_and_a_restart(endpoint: Endpoint, tmp_path: Path) -> None:
    """The live view shows 'unreachable, retrying' with the reason, and keeps going.

    The endpoint answers 404, then metrics, then goes away (connection refused) and comes
    back on the same port: the process stays up throughout, shows each problem, shows the
    pipeline again after the restart, and exits 0 on SIGINT.
    """
    out = tmp_path / "top.out"
    env = {**os.environ, "TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    endpoint.mode = "404"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluiceway", "top", endpoint.url, "--interval", "0.1"],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip

    def wait_text(text: str, after: int = 0) -> int:
        deadline = time.monotonic() + 20
        while True:
            data = out.read_text(errors="replace")
            at = data.find(text, after)
            if at >= 0:
                return at
            assert proc.poll() is None, data
            assert time.monotonic() < deadline, f"{text!r} never shown: {data[-2000:]}"
            time.sleep(0.05)

    replacement: Endpoint | None = None
    try:
        at = wait_text("unreachable, retrying")
        wait_text("HTTP 404", at)
        endpoint.mode = "metrics"
        at = wait_text("pipeline web", at)
        endpoint.stop()
        at = wait_text("refused", at)
        replacement = Endpoint(port=endpoint.port)
        wait_text("pipeline web", at)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if replacement is not None:
            replacement.stop()
        endpoint.stop = lambda: None  # type: ignore[method-assign]
    assert code == 0
    assert "Traceback" not in out.read_text(errors="replace")


def test_a_malformed_ipv6_url_is_a_one_line_error() -> None:
    """``top 'http://[::1'``: one line naming the URL, exit status 2, no traceback."""
    top = _top("http://[::1", "--once")
    lines = top.stderr.strip().splitlines()
    assert top.returncode == 2
    assert len(lines) == 1, top.stderr
    assert "[::1" in lines[0]


def test_render_shows_a_question_mark_for_odd_values_and_missing_labels() -> None:
    """NaN or Inf gauges and samples without ``pipeline``/``shard``/``le``: rendered as ``?``."""
    from rich.console import Console

    from sluiceway._top import render

    nan, inf = float("nan"), float("inf")
    data = {
        "sluiceway_items_processed_total": [({"pipeline": "p"}, 1.0), ({}, 5.0)],
        "sluiceway_queue_depth": [
            ({"pipeline": "p", "shard": "0"}, nan),
            ({"pipeline": "p", "shard": "1"}, inf),
            ({"pipeline": "p"}, 3.0),
        ],
        "sluiceway_queue_capacity": [({"pipeline": "p", "shard": "0"}, 10.0)],
        "sluiceway_priority_latency_seconds_bucket": [({"pipeline": "p"}, 3.0)],
    }
    console = Console(record=True, width=200)
    console.print(render(data, None, 1.0))
    text = console.export_text()
    assert "pipeline p" in text
    assert "?" in text


def test_a_render_error_is_unreadable_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """If rendering fails, ``--once`` prints one line and returns 1 (the live view retries)."""
    from sluiceway import _top

    monkeypatch.setattr(_top, "scrape", lambda url: {})

    def broken(*args: object) -> None:
        raise ValueError("cannot convert float NaN to integer")

    monkeypatch.setattr(_top, "render", broken)
    assert _top.run_top("http://127.0.0.1:1/metrics", interval=0.01, once=True) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unreadable" in err[0]
