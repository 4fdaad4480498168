"""``sluiceway serve`` as a user runs it: the console script, in the user's folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_imports_the_module_from_the_working_directory(
    app_dir: Path, stop: list[subprocess.Popen[bytes]], workers: int
) -> None:
    """``sluiceway serve myapp:make`` works from the folder holding myapp.py, no PYTHONPATH."""
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
