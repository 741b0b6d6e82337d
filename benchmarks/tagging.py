"""Benchmark for kexue.tagging (issue 4): CRF loss / Viterbi vs pytorch-crf and torch-struct.

Prints markdown tables from one run (float32, CPU). Each cell is the minimum over interleaved
repeats (every round runs each implementation once): other jobs on a shared machine only ever add
time, so the minimum is the steadiest estimate; ratios come from the same run.

* CRF loss forward+backward (NLL w.r.t. emissions and transitions) and Viterbi decoding at
  b=64, t in {32, 128, 512}, k in {5, 20, 50}: kexue fast path (custom forward-backward gradient),
  kexue reference path (autograd through the recursion), pytorch-crf, torch-struct
  ``LinearChainCRF``;
* head loss forward+backward, MEMM / Bi-MEMM vs our CRF (no recursion in the MEMM);
* ``--segmenters`` (issue 14): word segmentation against ``jieba`` (the segmenter users pick
  today; shipped dictionary, default mode) on the whole PKU / MSR / UD-GSD test sets with the
  same SIGHAN scorer, jieba on the raw and on the normalised test text; ours is ``kexue tag
  train --data NAME`` with its defaults (plus ``--ours-args``), timed, scored on the whole test
  set (``--no-ours``: jieba only, seconds).

Usage: ``python benchmarks/tagging.py [--quick | --crf-only | --segmenters] [--repeats 7]
[--no-struct] [--snapshot PATH]``. torch-struct is timed only for t*k <= 6400 and the reference path only for
t <= 128 (both take seconds per call).
Targets (issue 4): CRF loss and Viterbi >= 3x faster than pytorch-crf at t=128, k=20;
MEMM loss >= 5x faster than our CRF at t=512. Issue 14: ours >= 5 word-F1 points above jieba.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from kexue.core.timing import time_calls
from kexue.report.bench import add_snapshot_option, run_recorded
from kexue.tagging import CRF, MEMM, BiMEMM


def best_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Interleaved timing: every round runs each function once; returns the minimum in ms.

    One warm-up call each, then ``repeats`` rounds, at every size (the README's "best of 7" is
    literally 7 rounds, also at t=512).
    """
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_calls(fn, warmup=0, repeats=1).best_ms)
    return {name: min(v) for name, v in times.items()}


def crf_cases(b: int, t: int, k: int, struct: bool, reference: bool = True) -> tuple[dict, dict]:
    """Loss fwd+bwd and decode callables for every implementation at one size."""
    g = torch.Generator().manual_seed(0)
    em = torch.randn(b, t, k, generator=g, requires_grad=True)
    tags = torch.randint(0, k, (b, t), generator=g)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    lengths[0] = t
    mask = torch.arange(t)[None] < lengths[:, None]
    ours = CRF(k)
    loss, dec = {}, {}

    def fast():
        ours.loss(em, tags, mask).backward()

    def ref():
        ours.loss(em, tags, mask, reference=True).backward()

    loss["kexue (fast)"] = fast
    if reference:
        loss["kexue (reference)"] = ref
    dec["kexue"] = lambda: ours.decode(em, mask)
    try:
        import torchcrf
    except ImportError:  # pragma: no cover - peers are optional
        torchcrf = None
    if torchcrf is not None:
        peer = torchcrf.CRF(k, batch_first=True)

        def pc_loss():
            (-peer(em, tags, mask, reduction="mean")).backward()

        loss["pytorch-crf"] = pc_loss
        dec["pytorch-crf"] = lambda: peer.decode(em, mask)
    if struct:
        try:
            import torch_struct
        except ImportError:  # pragma: no cover
            torch_struct = None
        if torch_struct is not None:
            trans = torch.zeros(k, k, requires_grad=True)

            def potentials():
                # torch-struct wants (b, t-1, next, prev); fold f_1 into the first edge
                edge = em[:, 1:, :, None] + trans.T[None, None]
                first = torch.zeros_like(edge)
                first[:, 0] = em[:, 0][:, None, :].expand(b, k, k)
                return edge + first

            def ts_loss():
                dist = torch_struct.LinearChainCRF(potentials(), lengths=lengths)
                dist.partition.mean().backward()

            def ts_dec():
                with torch.no_grad():
                    torch_struct.LinearChainCRF(potentials(), lengths=lengths).argmax  # noqa: B018

            loss["torch-struct"] = ts_loss
            dec["torch-struct"] = ts_dec
    return loss, dec


def head_cases(b: int, t: int, k: int) -> dict:
    g = torch.Generator().manual_seed(0)
    em = torch.randn(b, t, k, generator=g, requires_grad=True)
    tags = torch.randint(0, k, (b, t), generator=g)
    heads = {"CRF": CRF(k), "MEMM": MEMM(k), "Bi-MEMM": BiMEMM(k)}
    return {
        name: (lambda h=h: h.loss(em, tags, reduction="mean").backward())
        for name, h in heads.items()
    }


SEGMENTATION_SETS = ("pku-cws", "msr-cws", "ud-gsd-cws")


def ours_segmenter(name: str, extra: list[str]) -> dict[str, float]:
    """Train ``kexue tag train --data name`` (defaults + ``extra``) and score the whole test set.

    Returns:
        ``{"f1", "train_s" (wall time of the train command), "chars_per_s" (decoding)}``.
    """
    from kexue import data
    from kexue.cli import main as kexue_main
    from kexue.tagging.bert import load_tagger
    from kexue.tagging.recipe import cws_examples, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its report lines, not the table
            rc = kexue_main(["tag", "train", "--data", name, "--out", out, "--no-progress", *extra])
        train_s = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"kexue tag train --data {name} failed (exit {rc})")
        ev = evaluate(load_tagger(out), cws_examples(data.load(name, "test")), "cws")
    return {"f1": ev["f1"], "train_s": train_s, "chars_per_s": ev["chars_per_s"]}


def segmenters(ours: bool, extra: list[str]) -> None:
    """Print the jieba-vs-ours word segmentation table (whole test sets)."""
    from kexue import data
    from kexue.experiments.crf_memm_side import jieba_scores

    print("\n**Word segmentation vs jieba, whole test sets (SIGHAN word F1 %)**\n")
    print("| dataset | test sentences | jieba, raw text | jieba, normalised text | jieba chars/s "
          "| ours | ours train s | ours chars/s | ours − better jieba |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in SEGMENTATION_SETS:
        jb = jieba_scores(name)
        if jb is None:
            raise SystemExit("jieba is not installed (pip install jieba, or the [peers] extra)")
        n = len(data.load(name, "test"))
        cells = ["-", "-", "-", "-"]
        if ours:
            print(f"  training ours on {name} ...", file=sys.stderr)
            o = ours_segmenter(name, extra)
            gap = 100 * (o["f1"] - max(jb["f1"], jb["f1_norm"]))
            cells = [f"{100 * o['f1']:.2f}", f"{o['train_s']:.0f}", f"{o['chars_per_s']:.0f}",
                     f"{gap:+.2f}"]  # fmt: skip
        print(f"| {name} | {n} | {100 * jb['f1']:.2f} | {100 * jb['f1_norm']:.2f} | "
              f"{jb['chars_per_s']:.0f} | " + " | ".join(cells) + " |", flush=True)  # fmt: skip
    print("\nOurs is trained and scored on the normalised text (digits -> 0, Latin -> X, long "
          "words -> L); jieba on both texts; 'better jieba' is the higher of its two F1.")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="only t=128, k=20 and t=512, k=20")
    ap.add_argument("--crf-only", action="store_true", help="only the CRF loss at t=128, k=20")
    ap.add_argument("--no-struct", action="store_true", help="skip torch-struct (slow)")
    ap.add_argument("--segmenters", action="store_true", help="only the jieba-vs-ours table")
    ap.add_argument("--no-ours", action="store_true", help="--segmenters: score jieba only")
    ap.add_argument("--ours-args", default="", help="--segmenters: extra `kexue tag train` args")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (1 is steadier on a busy machine)",
    )
    add_snapshot_option(ap, "tagging")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "tagging-segmenters" if args.segmenters else "tagging"
    return run_recorded(
        lambda: _run(args), args.snapshot, name=name, script="benchmarks/tagging.py", argv=argv
    )


def _run(args: argparse.Namespace) -> int:
    if args.segmenters:
        segmenters(not args.no_ours, shlex.split(args.ours_args))
        return 0
    b = args.batch
    print(f"b={b}, float32, best of {args.repeats} interleaved runs")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"load avg {load:.1f}, b={b}, float32, best of {args.repeats} interleaved runs",
        file=sys.stderr,
    )
    sizes = [(t, k) for t in (32, 128, 512) for k in (5, 20, 50)]
    if args.quick:
        sizes = [(128, 20), (512, 20)]
    if args.crf_only:
        sizes = [(128, 20)]
    print("\n**CRF loss forward+backward and Viterbi (ms, lower is better)**\n")
    print(
        "| t | k | loss: kexue fast | kexue reference | pytorch-crf | torch-struct | speed-up vs pytorch-crf "
        "| viterbi: kexue | pytorch-crf | torch-struct | speed-up vs pytorch-crf |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, k in sizes:
        print(f"  timing t={t} k={k} ...", file=sys.stderr)
        struct = not args.no_struct and t * k <= 128 * 50
        loss_fns, dec_fns = crf_cases(b, t, k, struct, reference=t <= 128)
        lm = best_ms(loss_fns, args.repeats)
        dm = best_ms(dec_fns, args.repeats)

        def cell(d: dict[str, float], key: str) -> str:
            return f"{d[key]:.1f}" if key in d else "-"

        lsp = lm.get("pytorch-crf", float("nan")) / lm["kexue (fast)"]
        dsp = dm.get("pytorch-crf", float("nan")) / dm["kexue"]
        print(
            f"| {t} | {k} | {cell(lm, 'kexue (fast)')} | {cell(lm, 'kexue (reference)')} | "
            f"{cell(lm, 'pytorch-crf')} | {cell(lm, 'torch-struct')} | {lsp:.1f}x | "
            f"{cell(dm, 'kexue')} | {cell(dm, 'pytorch-crf')} | {cell(dm, 'torch-struct')} | {dsp:.1f}x |",
            flush=True,
        )
    if args.crf_only:
        return 0
    print("\n**Head loss forward+backward: MEMM / Bi-MEMM vs CRF (ms)**\n")
    print("| t | k | CRF | MEMM | Bi-MEMM | CRF / MEMM | CRF / Bi-MEMM |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t, k in [(128, 20), (512, 20)] if args.quick else sizes:
        hm = best_ms(head_cases(b, t, k), args.repeats)
        print(
            f"| {t} | {k} | {hm['CRF']:.1f} | {hm['MEMM']:.1f} | {hm['Bi-MEMM']:.1f} | "
            f"{hm['CRF'] / hm['MEMM']:.1f}x | {hm['CRF'] / hm['Bi-MEMM']:.1f}x |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
