"""Sparse attention vs SDPA (and FlexAttention) on CPU: fwd / fwd+bwd time and peak extra memory.

One run, one table (markdown), b=1, h=8, e=64, fp32. Methods: SDPA full, SDPA with a dense bool
local mask, our blocked local(64) / atrous(128) / atrous(n/128) / sparse(128) / strided(128) /
fixed(128), and compiled
FlexAttention with a sliding-window block mask (forward only: no CPU backward) where it compiles.
Then the issue's targets at the largest n are checked and printed. Not a test.

    .venv/bin/python benchmarks/attention.py [--sizes 1024 2048 4096 8192 16384] [--threads 2]
        [--no-flex] [--flex-sizes 16384] [--no-memory] [--kernel-threads 1] [--heap-reuse]
        [--snapshot docs/results/bench/attention.json]

``--heap-reuse`` times with glibc's heap serving every allocation (``kexue.core.timing.heap_reuse``,
like running under ``MALLOC_MMAP_MAX_=0``): with the defaults every tensor of 32 MiB or more is
fresh memory on every call (kexue's own outputs and gradients take it in huge pages, through
``kexue.core.buffers.fresh_empty``; SDPA's in 4 KiB pages). It implies ``--no-memory``
(resident-set peaks need freed memory back at the OS).

Memory method: see kexue.attention.bench (resident-set peak during one fwd+bwd, glibc mmap
threshold lowered so freed tensors return to the OS).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import torch

from kexue.attention import set_kernel_threads
from kexue.attention.bench import (
    default_methods,
    flex_method,
    markdown_table,
    run_benchmark,
    time_method,
)
from kexue.core.timing import heap_reuse
from kexue.report.bench import add_snapshot_option, command_line, write_snapshot


def _get(rows, method, n, key="fwd_bwd_s"):
    for r in rows:
        if r["method"] == method and r["n"] == n and not r["error"]:
            return r[key]
    return math.nan


SKIP_S = 120.0  # a method slower than this (fwd or fwd+bwd) is not run at larger sizes
OURS = ("local(64)", "atrous(128)", "atrous(n/128)", "sparse(128)", "strided(128)", "fixed(128)")


def targets(rows, n: int, n_half: int, cpu: bool) -> list[str]:
    """The issue's targets (issues 1 and 15), checked on this run's numbers (wall clock or
    process CPU time)."""
    key, fkey = ("fwd_bwd_cpu_s", "fwd_cpu_s") if cpu else ("fwd_bwd_s", "fwd_s")
    full = _get(rows, "SDPA full", n, key)
    out = []

    def line(name, value, ok):
        status = "n/a" if value != value else ("MET" if ok else "MISSED")
        out.append(f"- {name}: {value:.2f} -> {status}")

    sp = full / _get(rows, "local(64)", n, key)
    line("local(64) fwd+bwd speed-up vs SDPA full (>= 50)", sp, sp >= 50)
    sp = full / _get(rows, "sparse(128)", n, key)
    line("sparse(128) fwd+bwd speed-up vs SDPA full (>= 10)", sp, sp >= 10)
    fl = _get(rows, "FlexAttention local(64) compiled", n, fkey) / _get(rows, "local(64)", n, fkey)
    line("local(64) fwd speed-up vs compiled FlexAttention fwd (>= 3)", fl, fl >= 3)
    for name in ("local(64)", "atrous(n/128)"):
        r = _get(rows, name, n, key) / _get(rows, name, n_half, key)
        line(f"{name} time ratio n={n}/n={n_half} (<= 2.2)", r, r <= 2.2)
    return out


def memory_targets(rows) -> list[str]:
    """Issue 15: every pattern's peak extra memory <= SDPA full's at every n >= 4096."""
    out = []
    for n in sorted({r["n"] for r in rows if r["n"] >= 4096}):
        ref = _get(rows, "SDPA full", n, "peak_mib")
        if not ref or ref != ref:
            continue
        got = {m: _get(rows, m, n, "peak_mib") for m in OURS}
        got = {m: x for m, x in got.items() if x is not None and x == x}
        if not got:
            continue
        worst = max(got, key=got.get)
        mib = got[worst]
        status = "MET" if mib <= ref else "MISSED"
        out.append(
            f"- n={n}: largest peak {worst} {mib:.0f} MiB vs SDPA full {ref:.0f} MiB "
            f"(every pattern <= SDPA full) -> {status}"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--repeats", type=int, default=5, help="best of (one call where a forward takes > 1 s)"
    )
    p.add_argument("--no-flex", action="store_true")
    p.add_argument("--flex-sizes", type=int, nargs="+", default=None, help="default: largest n")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument(
        "--kernel-threads", type=int, default=0,
        help="cap on the threads inside kexue's attention kernels (0: torch's setting)",
    )  # fmt: skip
    p.add_argument(
        "--heap-reuse", action="store_true",
        help="glibc serves every allocation from its heap during the timings (no mmap)",
    )  # fmt: skip
    add_snapshot_option(p, "attention")
    args = p.parse_args()
    if args.heap_reuse:  # peaks need freed memory back at the OS: they come from a default run
        args.no_memory = True
        if not heap_reuse(True):
            raise SystemExit("--heap-reuse needs glibc")
    torch.set_num_threads(args.threads)
    set_kernel_threads(args.kernel_threads or None)
    t0 = time.time()
    flex = None
    if not args.no_flex:
        try:
            flex = flex_method()
        except Exception as exc:  # noqa: BLE001 - FlexAttention needs a recent torch
            print(f"FlexAttention unavailable: {type(exc).__name__}: {exc}")
    flex_sizes = set(args.flex_sizes or [max(args.sizes)])
    rows, too_slow = [], set()  # a method over SKIP_S at one size is skipped at larger ones
    for n in sorted(set(args.sizes) | (flex_sizes if flex else set())):
        # Flex joins the round-robin of its sizes: timed under the same conditions as ours
        # (a separate phase after SDPA full's multi-second calls favoured whichever ran alone)
        methods = [m for m in default_methods() if n in args.sizes]
        methods += [flex] if flex is not None and n in flex_sizes else []
        rows += run_benchmark([n], methods, repeats=args.repeats, memory=False,
                              skip_slow_s=SKIP_S, progress=print, too_slow=too_slow)  # fmt: skip
    if not args.no_memory:  # second phase (changes malloc settings): every method, same inputs
        from kexue.attention.bench import peak_extra_mib

        methods = {m.name: m for m in default_methods()}
        for r in rows:
            m = methods.get(r["method"])
            if m is not None and not r["error"]:
                r["peak_mib"] = peak_extra_mib(m.build(r["n"]), r["n"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, load avg {load:.1f}, "
        f"b=1 h=8 e=64 fp32, total {time.time() - t0:.0f} s"
        + (", timings with --heap-reuse (no mmap)" if args.heap_reuse else "")
    )
    print(markdown_table(rows))
    n = max(args.sizes)
    summary = [markdown_table([r for r in rows if r["n"] == n])]
    for cpu in (False, True):
        summary += ["", f"Targets at n={n} ({'process CPU time' if cpu else 'wall clock'}):", ""]
        summary += targets(rows, n, n // 2, cpu)
    if not args.no_memory:
        summary += ["", "Memory targets (peak extra MiB of one fwd+bwd):", ""]
        summary += memory_targets(rows)
    if args.threads > 1:
        summary += ["", "Threads:", "", thread_target(n, args.threads)]
    print("\n".join(summary[1:]))
    if args.snapshot:
        command = command_line("benchmarks/attention.py", sys.argv[1:])
        extra = ", timings with --heap-reuse (no mmap)" if args.heap_reuse else ""
        write_snapshot(
            args.snapshot, name="attention", command=command,
            markdown=f"b=1, h=8, e=64, fp32, best of {args.repeats}{extra}\n\n" + "\n".join(summary),
            data={"rows": rows},
        )  # fmt: skip
        print(f"snapshot: {args.snapshot}")


def thread_target(n: int, threads: int) -> str:
    """Issue 15: local(64) fwd+bwd with ``threads`` torch threads is not slower than with 1
    (kernel threads as set by ``--kernel-threads``), same inputs,
    interleaved, best of 3 each."""
    method = next(m for m in default_methods() if m.name == "local(64)")
    fn, best = method.build(n), {}
    for _ in range(3):
        for t in (1, threads):
            torch.set_num_threads(t)
            s = time_method(fn, n, repeats=1)["fwd_bwd_s"]
            best[t] = min(best.get(t, math.inf), s)
    torch.set_num_threads(threads)
    r = best[threads] / best[1]
    return (
        f"- local(64) fwd+bwd at n={n}: {threads} threads {best[threads] * 1e3:.0f} ms, 1 thread "
        f"{best[1] * 1e3:.0f} ms, ratio {r:.2f} (<= 1) -> {'MET' if r <= 1 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
