"""CI: install the built wheel with each extra alone into a fresh virtualenv and use it.

Usage: ``python .ci/check_extras.py WHEEL NATS_SERVER``. For every extra this proves that what
it promises works with nothing else installed: ``[http]`` serves events with
``sluiceway serve``, ``[nats]`` consumes them with ``sluiceway worker`` from a real
``nats-server -js`` (``NATS_SERVER``, the binary the dev install brings), ``[prometheus]``
exports a pipeline, ``[cli]`` loads ``top`` and the bench's live view. The bare install imports
the core, and each integration it lacks fails with one install hint naming the extra.
Everything listens on 127.0.0.1 only. Standard library only: runs under any interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

FACTORY = '''
"""A pipeline factory for the extras check: appends each event's "n" to $CI_OUT."""
import os

import sluiceway as sw


def factory() -> sw.Pipeline:
    out = os.environ["CI_OUT"]

    def handler(batch: list[dict[str, int]]) -> None:
        with open(out, "a", encoding="utf-8") as f:
            f.write("".join(f"{e['n']}\\n" for e in batch))

    return sw.Pipeline(handler, shards=2, batch_size=32, max_delay=0.002)
'''

PUBLISH = """
import asyncio, sys
from sluiceway.nats import Publisher

async def main() -> None:
    async with Publisher(sys.argv[1], create_stream=True) as pub:
        for n in range(100):
            await pub.publish({"n": n})

asyncio.run(main())
"""

N_EVENTS = 100


def fail(message: str) -> None:
    """Stop the check with a message."""
    print(f"check_extras: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its end, capturing its output."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def must(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run a command that must succeed; return its stdout."""
    proc = run(cmd, env)
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def venv(root: Path, name: str, wheel: str, extra: str) -> Path:
    """A fresh virtualenv with the wheel and one extra (or none); returns its bin directory."""
    where = root / name
    must([sys.executable, "-m", "venv", str(where)])
    bin_dir = where / "bin"
    spec = f"sluiceway[{extra}] @ {Path(wheel).resolve().as_uri()}" if extra else wheel
    must([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", spec])
    return bin_dir


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, ready: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``ready`` until it is true, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def lines(path: Path) -> int:
    """Lines written to ``path`` so far (0 if it does not exist yet)."""
    try:
        return len(path.read_text(encoding="utf-8").splitlines())
    except FileNotFoundError:
        return 0


def stop(proc: subprocess.Popen[str], name: str) -> None:
    """SIGTERM a process and wait for it to drain and exit."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail(f"{name} did not exit within 30 s of SIGTERM")


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def check_bare(root: Path, wheel: str) -> None:
    """The core imports; every integration names its extra once when it is missing."""
    bin_dir = venv(root, "bare", wheel, "")
    py, cli = str(bin_dir / "python"), str(bin_dir / "sluiceway")
    must([py, "-c", "import sluiceway as sw; sw.Pipeline(print).shutdown()"])
    version = must([py, "-c", "import sluiceway; print(sluiceway.__version__)"]).strip()
    if must([cli, "--version"]).strip() != f"sluiceway {version}":
        fail("sluiceway --version does not print the package's version")
    for module, extra in (
        ("sluiceway.http", "http"),
        ("sluiceway.client", "http"),
        ("sluiceway.nats", "nats"),
        ("sluiceway.prometheus", "prometheus"),
    ):
        proc = run([py, "-c", f"import {module}"])
        if proc.returncode == 0 or f"pip install 'sluiceway[{extra}]'" not in proc.stderr:
            fail(f"import {module} without its extra gave no install hint:\n{proc.stderr}")
    for command, extra, missing in (
        (["serve", "ci_app:factory"], "http", "uvicorn"),
        (["worker", "ci_app:factory", "--nats", "nats://127.0.0.1:1"], "nats", "nats"),
        (["top", "http://127.0.0.1:1/metrics"], "cli,prometheus", "prometheus_client"),
    ):
        help_text = must([cli, command[0], "--help"])
        if f"sluiceway[{extra}]" not in help_text:
            fail(f"sluiceway {command[0]} --help does not name the [{extra}] extra")
        proc = run([cli, *command])
        hint = f"pip install 'sluiceway[{extra}]'"
        if proc.returncode != 2 or proc.stderr.count(hint) != 1 or missing not in proc.stderr:
            fail(f"sluiceway {command[0]} without [{extra}]: want one hint, got:\n{proc.stderr}")
        print(f"  bare: sluiceway {command[0]} -> {proc.stderr.strip()}")


def check_http(root: Path, wheel: str) -> None:
    """``sluiceway serve`` takes events and drains them with only ``[http]`` installed."""
    bin_dir = venv(root, "http", wheel, "http")
    must([str(bin_dir / "python"), "-c", "import sluiceway.http, sluiceway.client"])
    out = root / "http-out"
    env = {**os.environ, "PYTHONPATH": str(root), "CI_OUT": str(out)}
    port = free_port()
    cmd = [str(bin_dir / "sluiceway"), "serve", "ci_app:factory", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with subprocess.Popen(cmd, env=env, text=True) as server:
        wait_for("sluiceway serve to answer /healthz", lambda: answers(f"{base}/healthz"))
        body = "".join(json.dumps({"n": n}) + "\n" for n in range(N_EVENTS)).encode()
        request = urllib.request.Request(
            f"{base}/v1/events?wait=true",
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            reply = json.loads(r.read())
        if r.status != 202 or reply.get("processed") != N_EVENTS:
            fail(f"serve answered {r.status} {reply}")
        if not answers(f"{base}/metrics"):
            fail("serve has no /metrics")
        stop(server, "sluiceway serve")
    if lines(out) != N_EVENTS:
        fail(f"serve processed {lines(out)} events, not {N_EVENTS}")


def check_nats(root: Path, wheel: str, nats_server: str) -> None:
    """``sluiceway worker`` consumes a real stream with only ``[nats]`` installed."""
    bin_dir = venv(root, "nats", wheel, "nats")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    out = root / "nats-out"
    env = {**os.environ, "PYTHONPATH": str(root), "CI_OUT": str(out)}
    server_cmd = [nats_server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "js")]
    with subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as ns:
        try:
            wait_for("nats-server", lambda: _connects(port))
            must([str(bin_dir / "python"), "-c", textwrap.dedent(PUBLISH), url], env)
            cmd = [str(bin_dir / "sluiceway"), "worker", "ci_app:factory", "--nats", url]
            with subprocess.Popen(cmd, env=env, text=True) as worker:
                wait_for(f"the worker to process {N_EVENTS} events", lambda: lines(out) >= N_EVENTS)
                stop(worker, "sluiceway worker")
        finally:
            ns.terminate()
            ns.wait(timeout=30)
    if sorted(int(x) for x in out.read_text().split()) != list(range(N_EVENTS)):
        fail("the worker did not process each published event")


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def check_prometheus(root: Path, wheel: str) -> None:
    """``[prometheus]`` exports a pipeline's metrics."""
    bin_dir = venv(root, "prometheus", wheel, "prometheus")
    code = """
import sluiceway as sw, sluiceway.prometheus as swp
from prometheus_client import CollectorRegistry, generate_latest
registry = CollectorRegistry()
p = sw.Pipeline(print).start()
swp.register(p, registry=registry)
assert b"sluiceway_" in generate_latest(registry)
p.shutdown()
"""
    must([str(bin_dir / "python"), "-c", code])


def check_cli(root: Path, wheel: str) -> None:
    """``[cli]`` loads the bench's live view and ``top``'s display."""
    bin_dir = venv(root, "cli", wheel, "cli")
    must([str(bin_dir / "python"), "-c", "import rich, sluiceway.bench._live"])
    must([str(bin_dir / "sluiceway"), "bench", "--help"])


def main() -> None:
    """Check every extra; exit 1 at the first failure."""
    wheel, nats_server = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="sluiceway-extras-") as tmp:
        root = Path(tmp)
        (root / "ci_app.py").write_text(FACTORY, encoding="utf-8")
        for name, check in (
            ("bare", lambda: check_bare(root, wheel)),
            ("[http]", lambda: check_http(root, wheel)),
            ("[nats]", lambda: check_nats(root, wheel, nats_server)),
            ("[prometheus]", lambda: check_prometheus(root, wheel)),
            ("[cli]", lambda: check_cli(root, wheel)),
        ):
            started = time.monotonic()
            check()
            print(f"  {name}: ok ({time.monotonic() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
