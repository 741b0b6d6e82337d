"""kexue.init vs torch.nn.init: orthogonal_ and variance-scaled normal init, side by side.

One run, wall-clock seconds (best of ``repeats``), printed as a markdown table. Not a test.
Both orthogonal_ implementations do one Householder QR of a Gaussian matrix, so the ratio should be
about 1; the difference is dtype handling: ours factorises in float32 and casts, torch factorises
in the weight's dtype (no bf16/fp16 QR kernel on CPU: it raises).

    .venv/bin/python benchmarks/init.py [--sizes 1024 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable

import torch

from kexue.init import geometric_init_, orthogonal_
from kexue.report.bench import add_snapshot_option, run_recorded


def best_time(fn: Callable[[], object], repeats: int) -> float | str:
    """Best wall-clock time of ``repeats`` calls, or the exception name if it raises."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report, don't crash the table
            return f"error: {type(e).__name__}"
        best = min(best, time.perf_counter() - t0)
    return best


def fmt(x: float | str) -> str:
    return x if isinstance(x, str) else f"{x * 1e3:.1f} ms"


def ratio(ours: float | str, theirs: float | str) -> str:
    if isinstance(ours, str) or isinstance(theirs, str):
        return "n/a"
    return f"{ours / theirs:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a busy box)")
    add_snapshot_option(p, "init")
    args = p.parse_args()
    run_recorded(
        lambda: _run(args), args.snapshot, name="init", script="benchmarks/init.py", argv=None
    )


def _run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for n in args.sizes:
        reps = args.repeats if n <= 2048 else 1
        for dtype in (torch.float32, torch.bfloat16):
            w = torch.empty(n, n, dtype=dtype)
            ours = best_time(lambda w=w: orthogonal_(w), reps)
            theirs = best_time(lambda w=w: torch.nn.init.orthogonal_(w), reps)
            name = f"orthogonal_ {n}x{n} {str(dtype).removeprefix('torch.')}"
            rows.append((name, fmt(ours), fmt(theirs), ratio(ours, theirs)))
        w = torch.empty(n, n)
        std = 1 / math.sqrt(n)
        ours = best_time(lambda w=w: geometric_init_(w, mode="fan_out"), args.repeats)
        theirs = best_time(lambda w=w, std=std: torch.nn.init.normal_(w, 0.0, std), args.repeats)
        rows.append(
            (
                f"geometric_init_ vs normal_ {n}x{n} float32",
                fmt(ours),
                fmt(theirs),
                ratio(ours, theirs),
            )
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, one run (best of {args.repeats}; "
        "1 repeat for sizes > 2048)\n"
    )
    print("| operation | kexue.init | torch.nn.init | ratio (ours / torch) |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
