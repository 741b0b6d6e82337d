"""Title-generation recipes at equal CPU time: character ROUGE-L on held-out training pairs
and on the test set, with the copy-the-lead baseline (no learning) beside them.

Every arm trains an L2R :class:`kexue.seq2seq.Seq2Seq` from scratch on the shipped set less its
last ``--holdout`` training pairs, for the number of steps that fits ``--budget`` CPU seconds
(calibrated on the arm's own first steps, then fixed, so a rerun is bit-identical), with a
cosine schedule over those steps. Held-out pairs rank the arms (model selection); test pairs are
reported, never used to choose. Decoding: beam 3, at most 32 characters.

Usage::

    python benchmarks/seq2seq_recipes.py [--data csl] [--budget 360] [--arms a,b] [--snapshot P]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from kexue import data
from kexue.core.seed import seed_everything
from kexue.report.bench import add_snapshot_option, run_recorded
from kexue.seq2seq import recipe
from kexue.seq2seq.metrics import char_tokens, title_scores

BASE: dict[str, Any] = {
    "embed_dim": 128, "layers": 2, "dropout": 0.1, "lr": 2e-3, "max_src_len": 128,
    "batch_size": 32, "copy_prior": True, "pointer": False, "label_smoothing": 0.0,
    "copy_continuation": False,
}  # fmt: skip
# label -> changes from BASE (BASE = `kexue seq2seq train`'s defaults before this benchmark)
ARMS: dict[str, dict[str, Any]] = {
    "defaults before (copy prior)": {},
    "+ pointer": {"pointer": True},
    "+ pointer, label smoothing 0.1": {"pointer": True, "label_smoothing": 0.1},
    "+ pointer, source 256": {"pointer": True, "max_src_len": 256},
    "+ pointer, no copy prior": {"pointer": True, "copy_prior": False},
    "+ pointer, lr 1e-3": {"pointer": True, "lr": 1e-3},
    "+ pointer, width 192": {"pointer": True, "embed_dim": 192},
    "+ pointer, dropout 0.3": {"pointer": True, "dropout": 0.3},
    "+ pointer, copy continuation": {"pointer": True, "copy_continuation": True},
}


def _model(vocab, o: dict[str, Any]):
    return recipe.new_model("l2r", vocab, embed_dim=o["embed_dim"], num_heads=4,
                            encoder_layers=o["layers"], decoder_layers=o["layers"],
                            dropout=o["dropout"], copy_prior=o["copy_prior"],
                            pointer=o["pointer"], copy_continuation=o["copy_continuation"])  # fmt: skip


def _steps_for(vocab, ds, o: dict[str, Any], budget: float, seed: int) -> int:
    """Steps of this arm that fit ``budget`` CPU seconds (4 timed steps after 1 warm-up)."""
    seed_everything(seed)
    model = _model(vocab, o).train()
    opt = torch.optim.Adam(model.parameters(), o["lr"])
    g = torch.Generator().manual_seed(seed)
    times = []
    for k in range(5):
        idx = torch.randint(len(ds), (o["batch_size"],), generator=g).tolist()
        batch = recipe.collate([ds.items[i] for i in idx])
        t0 = time.process_time()
        loss = model.loss(*batch, label_smoothing=o["label_smoothing"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k:
            times.append(time.process_time() - t0)
    return max(1, int(budget / (sum(times) / len(times))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("csl", "lcsts"), default="csl")
    ap.add_argument("--budget", type=float, default=360.0, help="CPU seconds of training per arm")
    ap.add_argument("--holdout", type=int, default=300, help="training pairs held out (selection)")
    ap.add_argument("--test-size", type=int, default=500, help="test pairs scored (0: all)")
    ap.add_argument("--arms", default="", help="comma-separated arm numbers (1-based; '': all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    add_snapshot_option(ap, "seq2seq-recipes")
    args = ap.parse_args(argv)
    names = list(ARMS)
    if args.arms:
        names = [names[int(i) - 1] for i in args.arms.split(",")]
    torch.set_num_threads(args.threads)
    rows: list[dict] = []

    def body() -> None:
        pairs = data.load(args.data, "train")
        train, held = pairs[: -args.holdout], pairs[-args.holdout :]
        test = data.load(args.data, "test")
        test = test[: args.test_size] if args.test_size else test
        vocab = recipe.build_vocab(train)
        lead_n = round(sum(len(char_tokens(t)) for _, t in train) / len(train))
        lead = {k: title_scores(recipe.lead_baseline(p, lead_n), [t for _, t in p])["rougeL"]
                for k, p in (("held", held), ("test", test))}  # fmt: skip
        print(f"**Title recipes on {args.data}, {args.budget:.0f} CPU s of training each** "
              f"({args.threads} thread; held-out = last {len(held)} training pairs, test = "
              f"{len(test)} pairs; character ROUGE-L %, beam 3)\n")  # fmt: skip
        print("| recipe | steps | train CPU s | held-out R-L | test R-L | test R-1 | test R-2 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| copy the first {lead_n} source characters (no learning) | 0 | 0 | "
              f"{100 * lead['held']:.1f} | {100 * lead['test']:.1f} | | |", flush=True)  # fmt: skip
        rows.append({"recipe": "lead", "lead_n": lead_n, "held_rougeL": lead["held"],
                     "test_rougeL": lead["test"]})  # fmt: skip
        for name in names:
            o = {**BASE, **ARMS[name]}
            lim = {"max_src_len": o["max_src_len"], "max_tgt_len": 32}
            ds = recipe.encode_pairs(vocab, train, **lim)
            steps = _steps_for(vocab, ds, o, args.budget, args.seed)
            seed_everything(args.seed)
            model = _model(vocab, o)
            t0 = time.process_time()
            recipe.fit(model, ds, steps=steps, batch_size=o["batch_size"], lr=o["lr"],
                       warmup=min(100, steps // 10), seed=args.seed,
                       label_smoothing=o["label_smoothing"])  # fmt: skip
            cpu = time.process_time() - t0
            ev = {k: recipe.evaluate(model, vocab, p, max_src_len=o["max_src_len"], beam_size=3,
                                     max_len=32)
                  for k, p in (("held", held), ("test", test))}  # fmt: skip
            t = ev["test"]
            print(f"| {name} | {steps} | {cpu:.0f} | {100 * ev['held']['rougeL']:.1f} | "
                  f"{100 * t['rougeL']:.1f} | {100 * t['rouge1']:.1f} | {100 * t['rouge2']:.1f} |",
                  flush=True)  # fmt: skip
            rows.append({"recipe": name, "options": o, "steps": steps, "train_cpu_s": cpu,
                         "held_rougeL": ev["held"]["rougeL"], "test_rougeL": t["rougeL"],
                         "test_rouge1": t["rouge1"], "test_rouge2": t["rouge2"],
                         "samples": list(zip([s[:40] for s, _ in test[:3]],
                                             [r for _, r in test[:3]], t["hyps"][:3],
                                             strict=True))})  # fmt: skip

    run_recorded(body, args.snapshot, name="seq2seq-recipes", script=__file__, data=lambda: rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
