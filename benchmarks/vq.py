"""Benchmark for kexue.vq (issue 11): the quantiser vs vector-quantize-pytorch, usage, sampling.

Prints markdown tables from one run (float32, CPU; every ratio from the same run):

1. quantiser forward+backward on ``(65536, 64)`` vectors with codebooks of 512 and 8192 (both
   in EMA mode, decay 0.99, training mode): ``kexue.vq.VectorQuantizer`` vs
   ``vector_quantize_pytorch.VectorQuantize``; best wall-clock time of interleaved rounds and
   the peak extra resident memory of one call (``kexue.core.timing``);
2. codebook usage on MNIST "encodings" (the 49 non-overlapping 4x4 patches of each image, i.e.
   a 7x7 map of 16-dim vectors per digit): K = 512, EMA + dead-code restart (threshold 1) in
   both libraries, the same steps and batches, usage counted over the test images;
3. sampling 64 code maps of 7x7 from an (untrained: the cost is the same) class-conditional
   ``PixelCNNPrior`` of the quick preset's size.

Usage: ``python benchmarks/vq.py [--small] [--repeats 3]``. Targets (issue 11): >= 5x faster
and <= 1/10 of the peer's peak memory at both sizes; usage >= 90%; sampling < 1 s.
"""

from __future__ import annotations

import argparse
import sys

import torch

from kexue.core.timing import peak_extra_mib, ratio_text, time_calls
from kexue.report.bench import add_snapshot_option, run_recorded
from kexue.vq import PixelCNNPrior, VectorQuantizer, code_statistics


def _peer():
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:  # the [peers] extra is not installed
        return None
    return VectorQuantize


def quantiser_cases(n: int, k: int, d: int) -> dict:
    """fwd+bwd callables of both libraries on the same ``(n, d)`` input."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, n, d, generator=g, requires_grad=True)
    ours = VectorQuantizer(k, d, ema_decay=0.99).train()
    cases = {}

    def run_ours():
        z.grad = None
        z_q, _, losses = ours(z)
        (z_q.sum() + losses["loss"]).backward()

    cases["kexue"] = run_ours
    peer_cls = _peer()
    if peer_cls is not None:
        peer = peer_cls(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25).train()

        def run_peer():
            z.grad = None
            q, _, loss = peer(z)
            (q.sum() + loss.sum()).backward()

        cases["vector-quantize-pytorch"] = run_peer
    return cases


def bench_quantiser(sizes: list[tuple[int, int]], d: int, repeats: int) -> list[list[str]]:
    rows = []
    for n, k in sizes:
        cases = quantiser_cases(n, k, d)
        for fn in cases.values():
            fn()  # warm-up (and the peer's lazy init)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):  # interleaved rounds: other jobs only ever add time
            for name, fn in cases.items():
                times[name].append(time_calls(fn, warmup=0, repeats=1).best)
        best = {name: min(v) for name, v in times.items()}
        mem = {name: peak_extra_mib(fn) for name, fn in cases.items()}
        peer = "vector-quantize-pytorch"
        for name in cases:
            speed = ratio_text(best[name], best[peer]) if peer in best else "n/a"
            if name == peer:
                speed = "1.0x"
            mib = mem[name]
            mem_ratio = "n/a"
            if peer in mem and mib is not None and mem[peer]:
                mem_ratio = f"{mib / mem[peer]:.3f}"
            rows.append([f"{n} x {d}, K={k}", name, f"{best[name] * 1e3:.0f}", speed,
                         "n/a" if mib is None else f"{mib:.0f}", mem_ratio])  # fmt: skip
        print(f"  done n={n} K={k}", file=sys.stderr, flush=True)
    return rows


def mnist_patches(split: str, limit: int) -> torch.Tensor:
    """``(limit, 49, 16)``: 4x4 patches of each image in [0, 1], raster order (a 7x7 map)."""
    from kexue import data

    x = data.load("mnist", split)[0][:limit].float() / 255
    p = x.unfold(1, 4, 4).unfold(2, 4, 4)  # (n, 7, 7, 4, 4)
    return p.reshape(len(x), 49, 16)


def bench_usage(k: int, steps: int, batch: int) -> list[list[str]]:
    train, test = mnist_patches("train", steps * batch), mnist_patches("test", 10_000)
    torch.manual_seed(0)
    ours = VectorQuantizer(k, 16, ema_decay=0.99, dead_code_threshold=1.0).train()
    models = {"kexue": ours}
    peer_cls = _peer()
    if peer_cls is not None:
        models["vector-quantize-pytorch"] = peer_cls(
            dim=16, codebook_size=k, decay=0.99, threshold_ema_dead_code=1.0
        ).train()
    rows = []
    for name, m in models.items():
        torch.manual_seed(0)
        for s in range(steps):
            with torch.no_grad():
                m(train[s * batch : (s + 1) * batch])
        m.eval()
        with torch.no_grad():
            idx = m(test)[1]
        st = code_statistics(idx, k)
        rows.append([name, f"{steps} x {batch * 49}", f"{100 * float(st['usage']):.1f}%",
                     f"{float(st['perplexity']):.1f}"])  # fmt: skip
    return rows


def bench_sampling(repeats: int) -> float:
    torch.manual_seed(0)
    prior = PixelCNNPrior(128, channels=32, num_layers=6, num_classes=10).eval()
    y = torch.arange(64) % 10
    return time_calls(lambda: prior.sample(64, (7, 7), y=y), warmup=1, repeats=repeats).best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="n=4096, K in {64, 512}, 20 usage steps")
    ap.add_argument("--repeats", type=int, default=3)
    add_snapshot_option(ap, "vq")
    args = ap.parse_args(argv)
    return run_recorded(
        lambda: _run(args), args.snapshot, name="vq", script="benchmarks/vq.py", argv=argv
    )


def _run(args: argparse.Namespace) -> int:
    if _peer() is None:
        print("vector-quantize-pytorch is not installed (pip install -e '.[peers]'): "
              "kexue only", file=sys.stderr)  # fmt: skip
    sizes = [(4096, 64), (4096, 512)] if args.small else [(65536, 512), (65536, 8192)]
    steps = 20 if args.small else 200
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU\n")

    print("**Quantiser forward+backward** (EMA codebook, training mode; best of "
          f"{args.repeats} interleaved rounds; peak extra RSS of one call)\n")  # fmt: skip
    print("| input | library | ms | speed vs peer | peak extra MiB | memory vs peer |")
    print("|---|---|---:|---:|---:|---:|")
    for row in bench_quantiser(sizes, 64, args.repeats):
        print("| " + " | ".join(row) + " |")

    # usage and sampling after the memory probes; their timings do not enter any ratio
    print("\n**Codebook usage on MNIST 4x4-patch encodings** (K = 512, EMA 0.99 + dead-code "
          "restart at 1; usage over the 10,000 test images' 490,000 vectors)\n")  # fmt: skip
    print("| library | steps x vectors | usage | perplexity |")
    print("|---|---|---:|---:|")
    for row in bench_usage(512, steps, 64):
        print("| " + " | ".join(row) + " |")

    t = bench_sampling(max(1, args.repeats))
    print(f"\n**Prior sampling**: 64 code maps of 7x7 (PixelCNN, 32 channels, 6 layers, K = 128, "
          f"class-conditional): {t:.3f} s (target < 1 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
