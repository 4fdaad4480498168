"""``sluiceway serve`` as a user runs it: the console script, in the user's folder."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import sluiceway as sw

NDJSON = {"content-type": "application/x-ndjson"}
SCRIPT = str(Path(sys.executable).with_name("sluiceway"))
MYAPP = """
import sluiceway as sw


def make():
    return sw.Pipeline(lambda batch: None, max_delay=0.001)


def raises():
    raise RuntimeError("no database")


def not_a_pipeline():
    return 42
"""


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing at the tests."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def wait_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    """Poll ``/healthz`` until it answers (bounded; fails if the process died)."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, proc.communicate()[1].decode()
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.05)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A user's project folder holding ``myapp.py``."""
    (tmp_path / "myapp.py").write_text(MYAPP)
    return tmp_path


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


def test_serve_imports_the_module_from_the_working_directory(
    app_dir: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """``sluiceway serve myapp:make`` works from the folder holding myapp.py, no PYTHONPATH.

    (Multi-worker children get it too: the other tests here run 2 workers the same way.)
    """
    workers = 1
    port = free_port()
    proc = subprocess.Popen(
        [SCRIPT, "serve", "myapp:make", "--port", str(port), "--workers", str(workers)],
        cwd=app_dir, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stop.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    resp = httpx.post(f"{url}/v1/events?wait=true", json=[{"id": 1}, {"id": 2}])
    assert resp.json() == {"accepted": 2, "processed": 2, "dead_lettered": 0}
    with sw.Client(url) as client:  # and the clients' idempotency keys are accepted
        assert client.send([{"id": 3}], wait=True).processed == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("myapp", "must look like module:function"),
        ("nosuchmodule:make", "cannot import module 'nosuchmodule'"),
        ("myapp:nosuch", "module 'myapp' has no attribute 'nosuch'"),
        ("myapp:raises", "myapp:raises() raised RuntimeError: no database"),
        ("myapp:not_a_pipeline", "myapp:not_a_pipeline() returned int, not a sluiceway.Pipeline"),
    ],
)
def test_a_bad_factory_is_one_line_and_exit_2(app_dir: Path, spec: str, message: str) -> None:
    """Each way a factory can be wrong gives one line naming the problem, not a traceback."""
    done = subprocess.run(
        [SCRIPT, "serve", spec, "--port", str(free_port())],
        cwd=app_dir, env=user_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr


SLOWAPP = """
import os
import time

import sluiceway as sw


def make():
    out = f"{os.environ['OUT']}-{os.getpid()}"

    def handler(batch):
        time.sleep(0.02)
        with open(out, "a", encoding="utf-8") as f:
            f.write("".join(f"{e['id']}\\n" for e in batch))

    return sw.Pipeline(handler, shards=1, batch_size=10, max_delay=0.001, adaptive=False)
"""


def ndjson(ids: range) -> bytes:
    """One ``{"id": n}`` line per id."""
    return b"".join(b'{"id": %d}\n' % i for i in ids)


def test_sigterm_with_a_short_drain_keeps_every_202_event(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """After SIGTERM with a short drain, every accepted event is processed or dead-lettered.

    Two workers, each logging its drain.
    Accepted: answered 202, or 503 with ``accepted`` to a ?wait=true open at the drain.
    Dead-lettered: in the --dead-letters JSONL file.
    """
    (tmp_path / "slowapp.py").write_text(SLOWAPP)
    workers = 2
    out, dead = tmp_path / "processed", tmp_path / "dead.jsonl"
    port = free_port()
    proc = subprocess.Popen(
        [SCRIPT, "serve", "slowapp:make", "--port", str(port), "--workers", str(workers),
         "--drain-timeout", "0.5", "--dead-letters", str(dead)],
        cwd=tmp_path, env={**user_env(), "OUT": str(out)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stop.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    held: list[int] = []
    for n in range(10):  # a connection each
        ids = range(n * 100, n * 100 + 100)
        resp = httpx.post(f"{url}/v1/events", content=ndjson(ids), headers=NDJSON)
        assert resp.status_code == 202
        held.extend(ids)
    waiting: list[httpx.Response] = []

    def open_wait(first: int) -> None:  # 1,000 events: 2 s of work, open at the drain
        body = ndjson(range(first, first + 1000))
        waiting.append(
            httpx.post(f"{url}/v1/events?wait=true", content=body, headers=NDJSON, timeout=30)
        )

    openers = [threading.Thread(target=open_wait, args=(10_000 * n,)) for n in range(1, 3)]
    for opener in openers:
        opener.start()
    time.sleep(0.3)  # the ?wait=true requests are admitted and waiting behind the backlogs
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for opener in openers:
        opener.join(30)
    _, err = proc.communicate()
    log = err.decode()
    answers = [(w.status_code, w.json()["accepted"]) for w in waiting]
    assert answers == [(503, 1000), (503, 1000)]  # open at the drain: held, not a 500
    held.extend([*range(10_000, 11_000), *range(20_000, 21_000)])
    processed = [int(x) for f in tmp_path.glob("processed-*") for x in f.read_text().split()]
    lettered = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {r["reason"] for r in lettered} == {"shutdown-timeout"}
    dead_ids = [r["item"]["id"] for r in lettered]
    assert dead_ids, "the drain timeout was long enough to process everything"
    assert len(processed) == len(set(processed))
    assert set(processed) | set(dead_ids) == set(held)  # nothing accepted vanished
    # A batch still inside the handler at the timeout is dead-lettered too (its call may
    # yet return): at most one batch per worker is both.
    assert len(set(processed) & set(dead_ids)) <= 10 * workers
    assert log.count("drain started") == workers
    logged = [int(n) for n in re.findall(r"(\d+) dead-lettered", log)]
    assert len(logged) == workers
    assert sum(logged) == len(dead_ids)
    assert str(dead) in log


def start(
    app_dir: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``sluiceway serve myapp:make ARGS`` in ``app_dir``; wait until it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [SCRIPT, "serve", "myapp:make", "--port", str(port), *args],
        cwd=app_dir, env={**user_env(), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return proc, url


def test_token_from_the_environment_also_guards_metrics(
    app_dir: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """$SLUICEWAY_TOKEN is the bearer token; --protect-metrics guards every worker's /metrics."""
    proc, url = start(
        app_dir, ["--workers", "2", "--protect-metrics"], {"SLUICEWAY_TOKEN": "from-env"}
    )
    stop.append(proc)
    auth = {"authorization": "Bearer from-env"}
    assert httpx.post(f"{url}/v1/events", json=[{"id": 1}]).status_code == 401
    assert httpx.post(f"{url}/v1/events", json=[{"id": 1}], headers=auth).status_code == 202
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers=auth).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "from-env" not in proc.communicate()[1].decode()


def test_token_file_is_stripped_and_token_flag_warns(
    app_dir: Path, tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """--token-file's content (stripped) is the token; --token works but warns."""
    secret = tmp_path / "token"
    secret.write_text("  from-file\n")
    proc, url = start(app_dir, ["--token-file", str(secret)], {"SLUICEWAY_TOKEN": "ignored"})
    stop.append(proc)
    ok = httpx.post(
        f"{url}/v1/events", json=[{"id": 1}], headers={"authorization": "Bearer from-file"}
    )
    assert ok.status_code == 202
    env = httpx.post(
        f"{url}/v1/events", json=[{"id": 1}], headers={"authorization": "Bearer ignored"}
    )
    assert env.status_code == 401
    flagged, url2 = start(app_dir, ["--token", "on-the-command-line"])
    stop.append(flagged)
    anon = httpx.post(f"{url2}/v1/events", json=[{"id": 1}])
    assert anon.status_code == 401
    flagged.send_signal(signal.SIGTERM)
    flagged.wait(30)
    assert "visible to every local user in the process list" in flagged.communicate()[1].decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-file", "/nonexistent/token"], "cannot read --token-file"),
        (["--protect-metrics"], "--protect-metrics needs a token"),
    ],
)
def test_unusable_token_settings_are_one_line_and_exit_2(
    app_dir: Path, args: list[str], message: str
) -> None:
    """A token file that cannot be read, or metrics protection without a token, is refused."""
    done = subprocess.run(
        [SCRIPT, "serve", "myapp:make", "--port", str(free_port()), *args],
        cwd=app_dir, env=user_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


ONCEAPP = """
import os
import time

import sluiceway as sw


def make():
    out = f"{os.environ['OUT']}-{os.getpid()}"

    def handler(batch):
        time.sleep(0.3)
        with open(out, "a", encoding="utf-8") as f:
            f.write("".join(f"{e['id']}\\n" for e in batch))

    return sw.Pipeline(handler, shards=1, batch_size=64, max_delay=0.001)
"""


def test_resends_reaching_another_worker_are_recognised(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """With 2 workers, a resend landing on the other worker is answered from the first.

    The workers share one idempotency store.
    """
    (tmp_path / "onceapp.py").write_text(ONCEAPP)
    out = tmp_path / "processed"
    port = free_port()
    proc = subprocess.Popen(
        [SCRIPT, "serve", "onceapp:make", "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env={**user_env(), "OUT": str(out)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stop.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    failures = 0
    for n in range(4):
        with sw.Client(url, timeout=0.1, breaker_failures=100) as client:
            result = client.send([{"id": n * 10 + i} for i in range(10)], wait=True)
        assert (result.accepted, result.processed) == (10, 10)
        failures += result.failures
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert failures >= 4  # every send timed out at least once and was resent
    processed = [int(x) for f in tmp_path.glob("processed-*") for x in f.read_text().split()]
    assert sorted(processed) == list(range(40))  # once each


def test_graceful_timeout_bounds_the_wait_for_a_slow_client(
    app_dir: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    """A client that never finishes its body holds shutdown for --graceful-timeout only."""
    proc, url = start(app_dir, ["--graceful-timeout", "0.5"])
    stop.append(proc)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(
            b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\n"
            b'content-length: 1000\r\n\r\n{"id": 1}\n'
        )
        time.sleep(0.2)  # the server is reading the body
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - began < 10  # not uvicorn's former fixed 60 s


def test_a_factory_failing_in_the_workers_stops_the_server_with_status_2(
    tmp_path: Path,
) -> None:
    """The factory passes the parent's check but raises in each worker: exit 2, one line.

    Before, uvicorn respawned the failing workers for ever.
    """
    (tmp_path / "flaky.py").write_text(
        "import os\n"
        "import sluiceway as sw\n"
        "def make():\n"
        "    if os.environ.get('FLAKY_SEEN'):\n"
        "        raise RuntimeError('worker boom')\n"
        "    os.environ['FLAKY_SEEN'] = '1'\n"
        "    return sw.Pipeline(lambda b: None)\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "serve", "flaky:make", "--workers", "2",
         "--port", str(port), "--dead-letters", ""],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 45
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert "worker boom" in errors[0]
    assert "Traceback" not in done.stderr
