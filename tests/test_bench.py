"""The main job: ``sluiceway bench --quick`` runs every phase and engine and loses nothing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


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


def test_bench_repeat_reports_median_and_spread(tmp_path: Path) -> None:
    """``--repeat 3`` runs the selection three times; the table and JSON give median and range."""
    out_json = tmp_path / "bench.json"
    out_html = tmp_path / "bench.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluiceway",
            "bench",
            "--repeat",
            "3",
            "--duration-scale",
            "0.02",
            "--phases",
            "saturate-cpu,saturate-io",
            "--engines",
            "sluiceway,ceiling",
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
    assert data["repeat"] == 3
    assert sorted({r["run"] for r in data["results"]}) == [0, 1, 2]
    raw = [
        r["throughput"]
        for r in data["results"]
        if r["engine"] == "sluiceway" and r["phase"] == "saturate-cpu"
    ]
    assert len(raw) == 3
    row = next(
        s for s in data["summary"] if s["engine"] == "sluiceway" and s["phase"] == "saturate-cpu"
    )
    assert row["throughput"]["runs"] == 3
    assert row["throughput"]["median"] == sorted(raw)[1]
    assert (row["throughput"]["min"], row["throughput"]["max"]) == (min(raw), max(raw))
    assert row["x_slw"] == {"median": 1.0, "min": 1.0, "max": 1.0, "runs": 3}
    assert row["lost"]["max"] == 0
    io_ceiling = next(
        s for s in data["summary"] if s["engine"] == "ceiling" and s["phase"] == "saturate-io"
    )
    assert io_ceiling["arithmetic"] is True
    assert "runs: 3; each cell is the median" in proc.stdout
    # under each engine: sluiceway, sluiceway-bulk, ceiling; then sluiceway, the io ceiling
    assert proc.stdout.count("\n  min-max") == 5
    assert "(arithmetic)" in proc.stdout
    assert proc.stderr.count("run 3 of 3") == 1
    page = out_html.read_text()
    assert "<th>runs</th><td>3</td>" in page


def test_bench_table_is_labelled() -> None:
    """The text table explains its columns and says which sluiceway settings it measured."""
    from sluiceway.bench._config import BenchConfig
    from sluiceway.bench._runner import run_bench
    from sluiceway.bench._table import render_text

    cfg = BenchConfig(engines=("ceiling",), phases=("saturate-io",), duration_scale=0.01)
    text = render_text(run_bench(cfg))
    assert "x slw     this engine's M ev/s divided by sluiceway's" in text
    assert "(arithmetic)  the io ceiling is computed, not run" in text
    assert "p50, p99  priority latency" in text
    assert "docs/workload.md" in text
    assert "sluiceway settings: switch_interval='auto', gc_threshold=interpreter's" in text
    assert text.rstrip().endswith("(arithmetic)")
    tuned = BenchConfig(
        engines=("ceiling",),
        phases=("saturate-io",),
        duration_scale=0.01,
        switch_interval=0.0003,
        gc_threshold=3000,
    )
    assert "switch_interval=0.0003, gc_threshold=3000" in render_text(run_bench(tuned))


def test_report_has_axes_settings_and_no_priority_panel_without_a_lane() -> None:
    """The HTML report has ticked axes with units, the settings, and skips lane-less engines."""
    from sluiceway.bench._report import render_html
    from sluiceway.bench._runner import PhaseResult, Result

    def phase(engine: str, lane: bool) -> PhaseResult:
        series = [
            {"t": t / 10, "throughput": 1e6 * t, "depth": 5.0, "batch_size": 64.0,
             "priority_p99_ms": 0.5, "rss_mb": 30.0}
            for t in range(1, 6)
        ]  # fmt: skip
        return PhaseResult(engine, "saturate-cpu", 0.5, 1e6, 10, 0, 10, 0, 0, 0.1, 0.5,
                           series=series, priority_lane=lane)  # fmt: skip

    run = Result(
        {"shards": 8, "engines": ["sluiceway", "ceiling"]},
        {"cpus": 2, "python": "3.11.7", "implementation": "CPython", "platform": "x"},
        [phase("sluiceway", True), phase("ceiling", False)],
        version="9.9.9",
        started="2026-11-28T02:00:00+00:00",
    )
    page = render_html(run)
    assert "<th>sluiceway version</th><td>9.9.9</td>" in page
    assert "<th>started (UTC)</th><td>2026-11-28T02:00:00+00:00</td>" in page
    assert "<th>shards</th><td>8</td>" in page
    assert "time in the phase (s)" in page
    assert "throughput (M events/s)" in page
    assert "priority latency p99 (ms)" in page
    panels = page.split("<svg")[1:]
    assert len(panels) == 4
    priority = next(p for p in panels if "priority latency p99" in p)
    assert ">sluiceway</text>" in priority
    assert ">ceiling</text>" not in priority
    assert ">ceiling</text>" in panels[0]
    colors = {c for c in ("#0072B2", "#009E73") if c in panels[0]}
    assert len(colors) == 2  # the two engines are drawn in different colours


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    """Axis ticks start at 0, end at or above the maximum, and step by 1, 2, 2.5 or 5 x 10^k."""
    from sluiceway.bench._report import nice_ticks

    assert nice_ticks(4.4) == [0.0, 2.0, 4.0, 6.0]
    assert nice_ticks(1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0.0) == [0.0, 1.0]
    ticks = nice_ticks(1_234_567.0)
    assert ticks[0] == 0.0
    assert ticks[-1] >= 1_234_567.0
    assert len(ticks) <= 6


def _bench_args(**changes: object) -> object:
    import argparse

    from sluiceway import cli

    args = cli._parser().parse_args(
        ["bench", "--engines", "ceiling", "--phases", "saturate-io", "--duration-scale", "0.01"]
    )
    return argparse.Namespace(**{**vars(args), **changes})


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("stdout_tty", "stderr_tty", "live"), [(True, False, False),
                                                                 (False, True, True)])  # fmt: skip
def test_live_view_only_when_stderr_is_a_terminal(
    monkeypatch: pytest.MonkeyPatch, stdout_tty: bool, stderr_tty: bool, live: bool
) -> None:
    """The live view draws on stderr, so stderr (not stdout) being a terminal decides."""
    from sluiceway.bench import _cli, _live
    from sluiceway.bench._runner import run_bench

    drawn: list[int] = []

    def fake_live(cfg: Any, run: int = 0) -> Any:
        drawn.append(run)
        return run_bench(cfg, run=run)

    monkeypatch.setattr(_live, "run_live", fake_live)
    monkeypatch.setattr(sys, "stdout", _Stream(stdout_tty))
    monkeypatch.setattr(sys, "stderr", _Stream(stderr_tty))
    assert _cli.bench_command(_bench_args()) == 0  # type: ignore[arg-type]
    assert drawn == ([0] if live else [])
    out = sys.stdout
    assert isinstance(out, _Stream)
    assert "== saturate-io" in out.getvalue()
