"""``kexue seq2seq train | generate | evaluate``: character-level title generation.

Pair files (``--train``, ``--dev``, ``--test``) are UTF-8 TSV, one ``source<TAB>target`` pair per
line (``--source-col/--target-col`` pick other columns). ``--data lcsts|csl`` uses a shipped set.
User errors raise ``ValueError``/``FileNotFoundError``; the main CLI prints one line, exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int
from kexue.core.io import check_out_dir
from kexue.seq2seq import recipe

DATASETS = ("lcsts", "csl")
DEFAULT_NO_REPEAT = 2  # L2R decoding; measured on CSL dev (see the seq2seq docs page)


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seq2seq train/generate/evaluate`` on the main CLI; returns ``seq2seq``."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    top = subparsers.add_parser(
        "seq2seq", help="train / run a title generator (L2R or bidirectional)"
    )
    sub = top.add_subparsers(dest="seq2seq_command", metavar="SUBCOMMAND", parser_class=type(top))

    t = sub.add_parser("train", help="train a model and save it to --out", formatter_class=fmt)
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", choices=DATASETS, help="shipped dataset")
    src.add_argument("--train", metavar="FILE", help="your own training pairs (TSV)")
    t.add_argument("--dev", metavar="FILE",
                   help="your own dev pairs for model selection (with --train; default: the last "
                   "--holdout training pairs)")  # fmt: skip
    t.add_argument("--source-col", type=int, default=0, help="source column of your TSV files")
    t.add_argument("--target-col", type=int, default=1, help="target column of your TSV files")
    t.add_argument("--bidirectional", action="store_true", help="L2R + R2L decoders (Su 2019)")
    t.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--embed-dim", type=int, default=128)
    t.add_argument("--num-heads", type=int, default=4)
    t.add_argument("--layers", type=int, default=2, help="encoder and decoder blocks each")
    t.add_argument("--max-src-len", type=int, default=128)
    t.add_argument("--max-tgt-len", type=int, default=32)
    t.add_argument("--max-train", type=int, default=0, help="first N training pairs (0: all)")
    t.add_argument("--pointer", action=argparse.BooleanOptionalAction, default=True,
                   help="pointer-generator output: copy source characters")  # fmt: skip
    t.add_argument("--copy-continuation", action=argparse.BooleanOptionalAction, default=True,
                   help="pointer: favour continuing the span copied so far (raised held-out "
                   "ROUGE-L on CSL: benchmarks/seq2seq_recipes.py)")  # fmt: skip
    t.add_argument("--copy-prior", action=argparse.BooleanOptionalAction, default=True,
                   help="Su's copy prior on the output logits")  # fmt: skip
    t.add_argument("--dropout", type=float, default=0.1)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--holdout", type=int, default=None,
                   help="training pairs held out for model selection when there is no --dev "
                   "(default: 10%% of them, at most 200; 0: keep the last weights)")  # fmt: skip
    t.add_argument("--eval-every", type=int, default=0,
                   help="steps between dev evaluations (0: 10 per run)")  # fmt: skip
    t.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop cleanly after this much training time (0: no limit)")  # fmt: skip
    t.add_argument("--min-freq", type=int, default=1, help="keep characters seen this often")
    t.add_argument(
        "--ckpt-every", type=int, default=500, help="checkpoint every N steps (and at the end)"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="titles for text lines", formatter_class=fmt)
    g.add_argument("--model", required=True, metavar="DIR", help="directory written by train")
    g.add_argument(
        "--input", default="-", metavar="FILE", help="one source text per line (- = stdin)"
    )
    g.add_argument("--output", default="-", metavar="FILE", help="- = stdout")
    _decode_options(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="character ROUGE-1/2/L and BLEU", formatter_class=fmt)
    e.add_argument("--model", required=True, metavar="DIR")
    e.add_argument("--test", required=True, metavar="FILE", help="source<TAB>target pairs")
    e.add_argument("--source-col", type=int, default=0)
    e.add_argument("--target-col", type=int, default=1)
    _decode_options(e)
    e.set_defaults(func=cmd_evaluate)
    return top


def _decode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=3, help="beam size (1: greedy)")
    p.add_argument("--max-len", type=int, default=32, help="most output characters")
    p.add_argument("--bidirectional", action="store_true",
                   help="require a bidirectional model (its search is always bidirectional)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-repeat-ngram", type=int, default=None, metavar="N",
                   help="never repeat an N-gram in an output (default: 2 for L2R models, which "
                   "raised dev ROUGE-L on CSL; 0: off; the bidirectional search has no such ban)")  # fmt: skip


def _pairs(path: str, source_col: int, target_col: int) -> list[tuple[str, str]]:
    from kexue import data

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    pairs = data.read_pairs_tsv(path, source_col=source_col, target_col=target_col)
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``kexue seq2seq train``."""
    from kexue import data

    for flag, minimum in (("steps", 1), ("batch_size", 1), ("embed_dim", 1), ("num_heads", 1),
                          ("layers", 1), ("max_src_len", 1), ("max_tgt_len", 1), ("max_train", 0),
                          ("min_freq", 1), ("source_col", 0), ("target_col", 0), ("ckpt_every", 1),
                          ("eval_every", 0)):  # fmt: skip
        check_positive_int(getattr(args, flag), "--" + flag.replace("_", "-"), minimum)
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    for flag in ("dropout", "label_smoothing"):
        v = getattr(args, flag)
        if not math.isfinite(v) or not 0.0 <= v < 1.0:
            raise ValueError(f"--{flag.replace('_', '-')} must be in [0, 1), got {v}")
    if not math.isfinite(args.max_minutes) or args.max_minutes < 0:
        raise ValueError(f"--max-minutes must be a finite number >= 0, got {args.max_minutes}")
    if args.embed_dim % args.num_heads:
        raise ValueError(
            f"--embed-dim {args.embed_dim} must be divisible by --num-heads {args.num_heads}"
        )
    if args.dev and not args.train:
        raise ValueError("--dev needs --train")
    out = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / "train" / "checkpoints").is_dir():
        raise ValueError(f"--resume: no checkpoints in {out / 'train'}")
    test: list = []
    if args.data:
        train, test = data.load(args.data, "train"), data.load(args.data, "test")
    else:
        train = _pairs(args.train, args.source_col, args.target_col)
    if args.max_train:
        train = train[: args.max_train]
    holdout = min(200, len(train) // 10) if args.holdout is None else args.holdout
    check_positive_int(holdout, "--holdout", 0)
    if args.dev:
        dev = _pairs(args.dev, args.source_col, args.target_col)
    elif holdout:
        if holdout >= len(train):
            raise ValueError(
                f"--holdout {holdout} leaves no training pairs (there are {len(train)})"
            )
        train, dev = train[:-holdout], train[-holdout:]
    else:
        dev = []
    vocab = recipe.build_vocab(train, min_freq=args.min_freq)
    ds = recipe.encode_pairs(
        vocab, train, max_src_len=args.max_src_len, max_tgt_len=args.max_tgt_len
    )
    from kexue.core.seed import seed_everything

    seed_everything(args.seed)
    kind = "bidirectional" if args.bidirectional else "l2r"
    model = recipe.new_model(kind, vocab, embed_dim=args.embed_dim, num_heads=args.num_heads,
                             encoder_layers=args.layers, decoder_layers=args.layers,
                             dropout=args.dropout, copy_prior=args.copy_prior,
                             pointer=args.pointer,
                             copy_continuation=args.pointer and args.copy_continuation)  # fmt: skip
    hist = recipe.fit(model, ds, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      warmup=min(100, max(1, args.steps // 10)), seed=args.seed, out_dir=out,
                      ckpt_every=args.ckpt_every, resume=args.resume,
                      overwrite=args.overwrite, progress=not args.no_progress,
                      label_smoothing=args.label_smoothing,
                      dev=(vocab, dev) if dev else None, eval_every=args.eval_every or None,
                      dev_src_len=args.max_src_len, dev_tgt_len=args.max_tgt_len,
                      max_seconds=args.max_minutes * 60 or None)  # fmt: skip
    extra = {"max_src_len": args.max_src_len, "max_tgt_len": args.max_tgt_len}
    if "best" in hist:
        extra["selected"] = hist["best"]
    recipe.save_model(out, model, vocab, extra)
    last = hist["train"].get("loss")
    loss = f"loss {last:.3f}" if last is not None else "already finished: no step run now"
    msg = f"trained {kind} model ({hist['steps']} steps, {loss}"
    if hist.get("stopped"):
        msg += f", stopped by --max-minutes {args.max_minutes:g}"
    msg += ")"
    if "best" in hist:
        b = hist["best"]
        msg += f", kept step {b['step']} (dev ROUGE-L {100 * b['dev_rougeL']:.1f}, greedy)"
    if test:
        ev = recipe.evaluate(model, vocab, test, max_src_len=args.max_src_len,
                             max_len=args.max_tgt_len,
                             no_repeat_ngram=0 if args.bidirectional else DEFAULT_NO_REPEAT)  # fmt: skip
        msg += f", {args.data} test ({len(test)} pairs, beam 3) " + ", ".join(
            f"{k} {100 * ev[k]:.1f}" for k in ("rouge1", "rouge2", "rougeL", "bleu")
        )
    print(f"{msg} -> {out}", file=sys.stderr)
    return 0


def _load(args: argparse.Namespace):
    for flag, minimum in (("beam", 1), ("max_len", 1), ("batch_size", 1)):
        check_positive_int(getattr(args, flag), "--" + flag.replace("_", "-"), minimum)
    if args.no_repeat_ngram is not None:
        check_positive_int(args.no_repeat_ngram, "--no-repeat-ngram", 0)
    model, vocab, meta = recipe.load_model(args.model)
    if args.bidirectional and meta["kind"] != "bidirectional":
        raise ValueError(
            f"--bidirectional: {args.model} holds an L2R model; train it with --bidirectional"
        )
    bi = meta["kind"] == "bidirectional"
    if bi and args.no_repeat_ngram:
        raise ValueError("--no-repeat-ngram: the bidirectional search has no n-gram ban (use 0)")
    n = (0 if bi else DEFAULT_NO_REPEAT) if args.no_repeat_ngram is None else args.no_repeat_ngram
    kw = {"beam_size": args.beam, "max_len": args.max_len, "batch_size": args.batch_size,
          "no_repeat_ngram": n}  # fmt: skip
    return model, vocab, meta.get("max_src_len", 256), kw


def cmd_generate(args: argparse.Namespace) -> int:
    """Handler of ``kexue seq2seq generate``."""
    model, vocab, max_src, kw = _load(args)
    if args.input == "-":
        lines = sys.stdin.read().splitlines()
    else:
        if not Path(args.input).is_file():
            raise FileNotFoundError(f"no such file: {args.input}")
        lines = Path(args.input).read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"input line {k} is empty (every line needs a source text)")
    titles = recipe.generate(model, vocab, lines, max_src_len=max_src, **kw) if lines else []
    text = "".join(t + "\n" for t in titles)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``kexue seq2seq evaluate``: prints a JSON line of scores."""
    model, vocab, max_src, kw = _load(args)
    pairs = _pairs(args.test, args.source_col, args.target_col)
    ev = recipe.evaluate(model, vocab, pairs, max_src_len=max_src, **kw)
    print(
        json.dumps(
            {k: round(ev[k], 6) for k in ("rouge1", "rouge2", "rougeL", "bleu")}
            | {"pairs": len(pairs)}
        )
    )
    return 0
