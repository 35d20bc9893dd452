"""Smoke test of `bench/screenpop.py`: a tiny run end to end (figures are not judged)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_with_five_agents_and_three_calls() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "screenpop.py"),
            "--agents", "5",
            "--calls", "3",
            "--speed", "0",
            "--capacity-calls", "3",
            "--repeat", "1",
        ],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # every call popped on its agent's websocket and ended there, in both phases
    assert re.findall(r"pops received / expected\s+(\d+) / (\d+)", out) == [("3", "3")] * 2
    assert re.findall(r"call_ended received\s+(\d+)", out) == ["3", "3"]
    assert re.search(r"pops on a wrong agent / duplicates\s+0 / 0", out)
    assert "AgentCalled written -> screen_pop read p50" in out and "TARGETS" in out
