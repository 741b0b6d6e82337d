"""benchmarks/mrc.py runs end to end at a tiny size (timings themselves are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_small():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mrc.py"), "--small", "--questions", "3",
         "--layers", "1", "--hidden", "32", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and "MLM (one pass)" in rows[1] and "full 16 steps" in rows[-1]
