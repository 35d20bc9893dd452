"""Smoke test of `bench/agi_load.py`: both runs go through and print their tables (figures are
not judged: they depend on the machine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_with_a_small_load() -> None:
    options = (
        "--calls 20 --latency-window 2 --media-min-ms 1 --media-max-ms 3"
        " --capacity-calls 10 --capacity-window 1.5 --capacity-warmup 0.5 --repeat 1 --citizens 50"
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "agi_load.py"), *options.split()],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for line in (
        "server time/command p99",
        "CAPACITY calls/s",
        "server CPU per call",
        "generator CPU",
        "baseline (threads)",
        "journeys (+ cases) stored",
        "TARGETS",
    ):
        assert line in out
    # every call of every run followed the recorded flow to its end
    latency = re.search(r"calls completed / cut / failed\s+(\d+) / (\d+) / (\d+)", out)
    assert latency is not None and int(latency[1]) > 0 and latency[3] == "0", out
    failed = re.search(r"^calls failed([ \d]+)$", out, re.MULTILINE)
    assert failed is not None and failed[1].split() == ["0"] * 4, out  # the four servers
