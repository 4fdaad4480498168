"""The main job: ``sluiceway bench --quick`` runs every phase and engine and loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_quick_end_to_end(tmp_path: Path) -> None:
    """The smoke run finishes, writes JSON and an HTML report, and reports zero lost."""
    out_json = tmp_path / "bench.json"
    out_html = tmp_path / "bench.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluiceway",
            "bench",
            "--quick",
            "--no-live",
            "--json",
            str(out_json),
            "--report",
            str(out_html),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out_json.read_text())
    phases = {r["phase"] for r in data["results"]}
    engines = {r["engine"] for r in data["results"]}
    assert phases == {"saturate-cpu", "saturate-io", "steady", "spike"}
    assert {"sluiceway", "sluiceway-bulk", "queue", "asyncio", "ceiling"} <= engines
    assert all(r["lost"] == 0 for r in data["results"])
    ours = [r for r in data["results"] if r["engine"] == "sluiceway"]
    assert all(r["throughput"] > 0 for r in ours)
    assert all(r["series"] for r in ours)  # the sampler recorded the run
    assert "== spike" in proc.stdout
    page = out_html.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") >= 4


def test_bench_rejects_unknown_engine() -> None:
    """A typo in --engines is an argument error, not a crash."""
    proc = subprocess.run(
        [sys.executable, "-m", "sluiceway", "bench", "--engines", "kafka"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "choose from" in proc.stderr
