"""Benchmark for kexue.train (issue 15): Trainer overhead against a bare PyTorch loop.

The README's MNIST MLP (784-128-10, Adam 1e-3, batch 64, its ``loss_fn`` with accuracy), trained
for ``--steps`` steps on the first 2048 MNIST test images, once by a bare loop::

    for xb, yb in DataLoader(ds, batch_sampler=...):
        opt.zero_grad(); loss, _ = loss_fn(model, (xb, yb)); loss.backward(); opt.step()

and once by ``Trainer.fit()`` (``out_dir=None``; a second Trainer row writes ``metrics.jsonl``
and the final checkpoint into a temporary directory). Both see the same batches in the same
order (the Trainer's seeded epoch permutation) from the same initial weights, so their final
weights must be bit-identical: the table says so. Rounds are interleaved so that load from other
processes hits every variant alike; the ratio is the median over rounds of the per-round
``bare time / variant time`` (>= 0.9 is the target), ratios taken from one run.

Timings on a machine shared with other jobs are indicative only; take final figures on an idle
machine.

Usage: ``python benchmarks/train.py [--steps 320] [--rounds 7] [--threads 1] [--quick]
[--snapshot PATH]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kexue import data
from kexue.core.seed import seed_everything
from kexue.report.bench import add_snapshot_option, command_line, write_snapshot
from kexue.train import TrainConfig, Trainer
from kexue.train.data import epoch_batches

BATCH = 64
LOG_EVERY = 20


def loss_fn(model, batch):
    """The README's loss: cross-entropy plus an accuracy metric."""
    xb, yb = batch
    logits = model(xb)
    acc = (logits.argmax(-1) == yb).float().mean()
    return nn.functional.cross_entropy(logits, yb), {"acc": acc}


def make_model() -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def bare(ds: TensorDataset, steps: int) -> tuple[tuple[float, float], nn.Module]:
    """A plain loop over the same batches as the Trainer's; returns ((wall s, cpu s), model)."""
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    seed_everything(0)
    t0, c0 = time.perf_counter(), time.process_time()
    done, epoch = 0, 0
    while done < steps:
        order = epoch_batches(ds, epoch=epoch, batch_size=BATCH, seed=0)[: steps - done]
        for xb, yb in DataLoader(ds, batch_sampler=order):
            opt.zero_grad()
            loss, _ = loss_fn(model, (xb, yb))
            loss.backward()
            opt.step()
        done += len(order)
        epoch += 1
    return (time.perf_counter() - t0, time.process_time() - c0), model


def trainer(
    ds: TensorDataset, steps: int, out_dir: str | None
) -> tuple[tuple[float, float], nn.Module]:
    model = make_model()
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, log_every=LOG_EVERY, seed=0)
    t = Trainer(
        model,
        torch.optim.Adam(model.parameters(), 1e-3),
        train_data=ds,
        loss_fn=loss_fn,
        config=cfg,
        out_dir=out_dir,
        progress=False,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    t.fit()
    return (time.perf_counter() - t0, time.process_time() - c0), model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=320, help="optimizer steps per run")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="40 steps, 2 rounds (smoke)")
    add_snapshot_option(ap, "train")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 40, 2
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = data.load("mnist", "test")
    ds = TensorDataset(images[:2048].flatten(1).float() / 255, labels[:2048])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"load avg {load:.1f}; {args.steps} steps x {args.rounds} rounds, batch {BATCH}, "
        f"log_every {LOG_EVERY} (ratios within one run are comparable; absolute times are not, "
        "and under contention they are indicative only)"
    )
    tmp = tempfile.mkdtemp(prefix="kexue-bench-train-")
    variants = {
        "bare PyTorch loop": lambda: bare(ds, args.steps),
        "Trainer (out_dir=None)": lambda: trainer(ds, args.steps, None),
        "Trainer (metrics.jsonl + final checkpoint)": lambda: trainer(
            ds, args.steps, tempfile.mkdtemp(dir=tmp)
        ),
    }
    for fn in variants.values():  # warm-up: allocator, first-call costs
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    identical = {name: True for name in variants}
    for r in range(args.rounds):
        print(f"  round {r + 1}/{args.rounds} ...", file=sys.stderr)
        models = {}
        for name, fn in variants.items():
            (sec, cpu_sec), models[name] = fn()
            times[name].append(sec)
            cpu[name].append(cpu_sec)
        for name in variants:
            identical[name] &= same_weights(models[name], models["bare PyTorch loop"])

    def per_round_ratio(ts: dict[str, list[float]], name: str) -> float:
        ref = ts["bare PyTorch loop"]
        return statistics.median(b / t for b, t in zip(ref, ts[name], strict=True))

    out: list[str] = []
    out.append(f"\n**Trainer vs a bare loop, README MNIST MLP, {args.steps} steps**\n")
    out.append("| loop | ms/step (median) | ms/step (fastest round) | speed vs bare (wall) "
               "| speed vs bare (CPU time) | same final weights as bare |")  # fmt: skip
    out.append("|---|---:|---:|---:|---:|---|")
    ratio = {}
    for name, ts in times.items():
        ratio[name] = per_round_ratio(times, name)
        out.append(
            f"| {name} | {statistics.median(ts) / args.steps * 1e3:.3f} | "
            f"{min(ts) / args.steps * 1e3:.3f} | {ratio[name]:.2f}x | "
            f"{per_round_ratio(cpu, name):.2f}x | "
            f"{'yes (bit-identical)' if identical[name] else 'NO'} |"
        )
    out.append(
        "\nspeed vs bare: median over rounds of (bare time / this loop's time) in the same round; "
        "1.00x = no overhead. CPU time is the fairer figure on a shared machine (1 thread)."
    )
    met = ratio["Trainer (out_dir=None)"] >= 0.9
    out.append("\n**Targets**\n")
    out.append("| target | met | value |")
    out.append("|---|---|---:|")
    out.append(f"| Trainer >= 0.9x a bare loop | {'yes' if met else 'NO'} | "
               f"{ratio['Trainer (out_dir=None)']:.2f}x |")  # fmt: skip
    out.append(
        f"| same weights at the same seed | {'yes' if all(identical.values()) else 'NO'} | |"
    )
    print("\n".join(out))
    if args.snapshot:
        write_snapshot(
            args.snapshot, name="train",
            command=command_line("benchmarks/train.py", sys.argv[1:] if argv is None else argv),
            markdown="\n".join(out), data={"seconds": times, "cpu_seconds": cpu, "ratio": ratio},
        )  # fmt: skip
        print(f"snapshot: {args.snapshot}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
