"""Benchmark for kexue.analysis (issue 13): one top-Hessian-eigenvalue estimate, ours vs PyHessian.

The experiment's VGG-style CNN (``kexue.analysis.recipe.vgg_cnn``) with and without BatchNorm on
one MNIST batch; power iteration with the same number of Hessian-vector products for everybody
(``tol=0`` everywhere, so no variant stops early) from the same start vector (the one PyHessian
draws after ``torch.manual_seed(0)``, passed to ours as ``init``), so the eval-mode estimates must
agree. Each timed call is a full estimate: building the gradient graph and ``--iters`` products.
Rows:

* ``kexue autograd``: our fast path (double backward on a retained graph), eval mode;
* ``kexue func``: our reference path (``torch.func`` jvp over grad, no retained graph), eval mode;
* ``pyhessian``: ``pyhessian.hessian(...).eigenvalues`` (the peer; it forces ``model.eval()``);
* ``kexue autograd, train mode``: the function SGD sees (BN with batch statistics), for scale.

One run, best wall-clock of ``--repeats`` calls, printed as a markdown table with ratios against
PyHessian. Final numbers belong to an idle machine (the load average is printed).

    .venv/bin/python benchmarks/analysis.py [--iters 20] [--batch 256] [--repeats 3] [--small]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform

import torch
from torch import nn

from kexue.analysis import hessian_top_eigenvalue
from kexue.analysis.recipe import classification_loss, mnist_tensors, vgg_cnn
from kexue.core.timing import ratio_text, time_calls
from kexue.report.bench import add_snapshot_option, run_recorded


def _pyhessian_estimate(model: nn.Module, batch, iters: int) -> float:
    from pyhessian import hessian

    h = hessian(model, nn.functional.cross_entropy, data=batch, cuda=False)
    torch.manual_seed(0)  # PyHessian draws its start vector from the global RNG
    value = h.eigenvalues(maxIter=iters, tol=0.0)[0][0]
    for p in model.parameters():  # PyHessian leaves create_graph gradients behind: free them
        p.grad = None
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20, help="Hessian-vector products per estimate")
    ap.add_argument("--batch", type=int, default=256, help="MNIST images in the batch")
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16], help="CNN stage widths")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a busy box)")
    ap.add_argument("--small", action="store_true", help="widths 4 8, batch 32, 3 iters, 1 repeat")
    add_snapshot_option(ap, "analysis")
    args = ap.parse_args(argv)
    if args.small:
        args.iters, args.batch, args.widths, args.repeats = 3, 32, [4, 8], 1
    for name in ("iters", "batch", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    return run_recorded(
        lambda: _run(args),
        args.snapshot,
        name="analysis",
        script="benchmarks/analysis.py",
        argv=argv,
    )


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        have_peer = False
    else:
        have_peer = True
    batch = mnist_tensors("train", args.batch)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"**kexue.analysis: top Hessian eigenvalue**, {args.iters} HVPs, batch {args.batch}, "
        f"widths {tuple(args.widths)}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, load average {load:.2f}\n"
    )
    print("| net | variant | time per estimate | λ_max | vs PyHessian |")
    print("|---|---|---|---|---|")
    for bn in (False, True):
        torch.manual_seed(0)
        model = vgg_cnn(batchnorm=bn, widths=tuple(args.widths))
        with torch.no_grad():  # non-trivial running statistics for the eval-mode rows
            model.train()(batch[0])
        net = "BN" if bn else "plain"
        torch.manual_seed(0)  # the same start vector PyHessian draws after manual_seed(0)
        init = [torch.randn(p.size()) for p in model.parameters()]
        rows: list[tuple[str, float, float]] = []
        for label, method, train_mode in (
            ("kexue autograd", "autograd", False),
            ("kexue func", "func", False),
            ("kexue autograd, train mode", "autograd", True),
        ):
            model.train(train_mode)
            out: list[float] = []

            def ours(method=method, out=out, model=model, init=init) -> None:
                est = hessian_top_eigenvalue(
                    model,
                    classification_loss,
                    batch,
                    iters=args.iters,
                    tol=0,
                    method=method,
                    init=init,
                )
                out.append(est.eigenvalue)

            t = time_calls(ours, warmup=1, repeats=args.repeats).best
            rows.append((label, t, out[-1]))
        theirs_t, theirs_v = float("nan"), float("nan")
        if have_peer:
            peer_model = copy.deepcopy(model).eval()
            vals: list[float] = []
            theirs_t = time_calls(
                lambda m=peer_model, vals=vals: vals.append(
                    _pyhessian_estimate(m, batch, args.iters)
                ),
                warmup=1,
                repeats=args.repeats,
            ).best
            theirs_v = vals[-1]
        for label, t, v in rows:
            vs = "n/a (other mode)" if "train" in label else ratio_text(t, theirs_t)
            print(f"| {net} | {label} | {t * 1e3:.1f} ms | {v:.4g} | {vs} |")
        peer = f"{theirs_t * 1e3:.1f} ms" if have_peer else "not installed"
        print(f"| {net} | pyhessian | {peer} | {theirs_v:.4g} | 1.00x |")
    print(
        "\nSame HVP count and the same start vector everywhere, so eval-mode λ_max agree up to "
        "rounding. 'faster/slower' = PyHessian time / ours."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
