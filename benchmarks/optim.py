"""Benchmark for kexue.optim (issue 5): row-sparse embedding steps and Lookahead overhead.

Prints one markdown table from one run:

* optimizer ``step()`` time on a 1,000,000 x 128 embedding (+ a 128 x 128 linear layer) where each
  step touches 1% of the rows: dense Adam (default, foreach, fused), ``torch.optim.SparseAdam``,
  ``Lazy(Adam)`` fast path (sparse and dense gradients) and the generic ``Lazy`` path;
* ``Lookahead(Adam, k=5)`` vs ``Adam`` per-step time on a 784-256-256-10 MLP (and the
  ``pytorch_optimizer`` peer), interleaved rounds.

Usage: ``python benchmarks/optim.py [--rows 1000000] [--repeats 8] [--quick] [--lookahead-only]
[--snapshot PATH]``.
Memory: about 2 GB per embedding variant (weights, gradient, two moments), one variant at a time.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from kexue.optim.bench import embedding_step_times, lookahead_overhead
from kexue.report.bench import add_snapshot_option, command_line, write_snapshot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--touched", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="100k rows, 3 repeats (smoke)")
    ap.add_argument(
        "--lookahead-only", action="store_true", help="only the Lookahead overhead table"
    )
    ap.add_argument("--rounds", type=int, default=0, help="Lookahead rounds (0: 40, quick 10)")
    add_snapshot_option(ap, "optim")  # a --lookahead-only run is named optim-lookahead
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rows, args.repeats = 100_000, 3
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"load avg {load:.1f} (ratios within one run are comparable; absolute times are not); embedding {args.rows} x {args.dim}, {args.touched:.0%} rows per step",
    )
    emb = []
    if not args.lookahead_only:
        emb = embedding_step_times(
            num_rows=args.rows,
            dim=args.dim,
            touched=args.touched,
            repeats=args.repeats,
            progress=lambda v: print(f"  timing {v} ...", file=sys.stderr),
        )
    ms = {r["variant"]: r["ms"] for r in emb}
    print("  timing Lookahead overhead ...", file=sys.stderr)
    la = lookahead_overhead(rounds=args.rounds or (10 if args.quick else 40))

    out: list[str] = []
    if emb:
        out.append(
            f"\n**Optimizer step, {args.rows:,} x {args.dim} embedding, {args.touched:.0%} rows touched per step**\n"
        )
        out.append(
            "| optimizer | gradient | ms/step (median) | ms/step (min) | speed-up vs Adam "
            "| vs fused Adam | vs SparseAdam |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|")
    for r in emb:
        t = r["ms"]
        out.append(
            f"| {r['variant']} | {r['grad']} | {t:.1f} | {r['ms_min']:.1f} | {ms['adam'] / t:.1f}x | "
            f"{ms['adam-fused'] / t:.2f}x | {ms['sparse-adam'] / t:.2f}x |"
        )
    out.append(
        f"\n**Lookahead step overhead, MLP 784-256-256-10 ({la['params']:,} params), k=5**\n"
    )
    out.append(
        "| optimizer | us/step (median) | us/step (fastest round) "
        "| overhead (median per-round ratio) | overhead (fastest rounds) |"
    )
    out.append("|---|---:|---:|---:|---:|")
    for name, us in la["us"].items():
        out.append(
            f"| {name} | {us:.0f} | {la['us_min'][name]:.0f} | {la['overhead'][name]:+.1%} "
            f"| {la['overhead_min'][name]:+.1%} |"
        )

    targets = []
    if emb:
        fast = ms["lazy-fast-sparse"]
        targets += [
            (
                "Lazy fast path >= 20x faster than default Adam",
                ms["adam"] / fast >= 20,
                ms["adam"] / fast,
            ),
            (
                "Lazy fast path >= 4x faster than fused Adam",
                ms["adam-fused"] / fast >= 4,
                ms["adam-fused"] / fast,
            ),
            (
                "Lazy fast path within 1.5x of SparseAdam",
                fast / ms["sparse-adam"] <= 1.5,
                fast / ms["sparse-adam"],
            ),
            (
                "dense-gradient path faster than fused Adam",
                ms["lazy-fast-dense"] < ms["adam-fused"],
                ms["adam-fused"] / ms["lazy-fast-dense"],
            ),
        ]
    targets.append(
        (
            "Lookahead overhead <= 5%",
            la["overhead"]["lookahead(adam)"] <= 0.05,
            la["overhead"]["lookahead(adam)"],
        )
    )
    peer = "pytorch_optimizer.Lookahead(adam)"
    if peer in la["overhead"]:
        targets.append(
            (
                "Lookahead overhead <= pytorch_optimizer's (value: theirs)",
                la["overhead"]["lookahead(adam)"] <= la["overhead"][peer],
                la["overhead"][peer],
            )
        )
    out.append("\n**Targets**\n")
    out.append("| target | met | value |")
    out.append("|---|---|---:|")
    for name, ok, value in targets:
        out.append(f"| {name} | {'yes' if ok else 'NO'} | {value:.3g} |")
    print("\n".join(out))
    if args.snapshot:
        write_snapshot(
            args.snapshot,
            name="optim-lookahead" if args.lookahead_only else "optim",
            command=command_line("benchmarks/optim.py", sys.argv[1:] if argv is None else argv),
            markdown="\n".join(out),
            data={"embedding": emb, "lookahead": la},
        )
        print(f"snapshot: {args.snapshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
