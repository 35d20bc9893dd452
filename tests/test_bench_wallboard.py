"""Smoke test of `bench/wallboard.py`: a tiny run end to end (figures are not judged)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ringing", "on_call", "answered", "ready", "ended")


def test_bench_runs_with_two_supervisors_five_agents_and_three_calls() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "wallboard.py"),
            "--supervisors", "2",
            "--agents", "5",
            "--calls", "3",
            "--speed", "0",
            "--repeat", "1",
        ],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # both supervisors saw every moment of every call: 2 x 3 each, none missed
    for kind in KINDS:
        assert re.search(rf"{kind}: missed / expected\s+0 / 6\b", out), kind
        assert re.search(rf"{kind} \(\w+\) p50 / p99 / max\s+[\d.]+ / [\d.]+ / [\d.]+ ms", out)
    assert re.search(r"ringing \+ on_call \(by call_id\) p50\s+[\d.]+ ms\s+12 deliveries", out)
    assert re.search(r"server CPU-seconds per 1,000 AMI events\s+[\d.]+", out)
    frames = re.search(r"topic frames per supervisor min / max\s+(\d+) / (\d+)", out)
    pushed = re.search(r"published on the topic meanwhile: (\d+)", out)
    assert frames and pushed and frames.groups() == (pushed.group(1),) * 2
    assert re.search(r"topic messages skipped \(seq gaps\) / resyncs\s+0 / 0", out)
    assert re.search(r"sockets closed: supervisors / agents\s+0 / 0", out)
    assert re.search(r"rows on a wrong agent\s+0\b", out)
    assert "agents' own screen_pop" in out and "pops 3 / 3" in out
    assert "TARGET" in out
