"""The chaos benchmark runs end to end: a short run prints its books and an OK verdict."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CHAOS = Path(__file__).resolve().parent.parent / "benchmarks" / "chaos.py"
VERDICT = re.compile(r"^chaos: (OK|FAIL) .+$")


def test_chaos_two_seconds_loses_nothing_and_drains() -> None:
    """Two seconds of chaos: a verdict line last, nothing lost or duplicated, a drain."""
    proc = subprocess.run(
        [sys.executable, str(CHAOS), "--seconds", "2", "--drain-bound", "20"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    assert VERDICT.match(lines[-1]), lines[-1]
    assert len(lines) <= 7, proc.stdout  # five, and one a hung pipeline
    assert any(line.startswith("items: accepted ") for line in lines), proc.stdout
    assert any(line.startswith("faults: ") for line in lines), proc.stdout
    assert proc.returncode == 0, proc.stdout
    assert lines[-1].startswith("chaos: OK "), proc.stdout
    assert "lost 0, duplicates 0" in lines[-1]
