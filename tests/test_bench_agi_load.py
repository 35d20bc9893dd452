"""Smoke test of `bench/agi_load.py`: it runs and prints its table (figures are not judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_with_a_small_load() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "agi_load.py"), "--calls", "20", "--total", "40",
         "--duration", "5", "--delay-min-ms", "1", "--delay-max-ms", "3"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "calls/s" in done.stdout and "server time/command p99" in done.stdout
    assert "40 (0)" in done.stdout  # every call of every run completed
