"""``kexue tag train`` and ``kexue tag predict``: train a character tagger and use it.

Word segmentation data (``--format segmented``: one sentence per line, words separated by
spaces) is tagged BMES; entity data (``--format conll``: one ``token ... tag`` line per token,
blank line between sentences; ``--format cluener``: CLUENER json lines) is tagged BIO or BIOES as
found in the file. ``--data NAME`` uses a registered dataset (``kexue data list``).

User errors raise ``ValueError`` with a one-line message; the main CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int
from kexue.core.io import atomic_write_text, check_out_dir
from kexue.core.seed import seed_everything
from kexue.tagging.encoders import POSITIONS
from kexue.tagging.recipe import (
    FORMATS,
    chunk_origins,
    cws_examples,
    evaluate,
    fit_tagger,
    ner_examples,
    new_tagger,
    output_spans,
    prepare_ner,
    read_tagged_file,
)
from kexue.tagging.schemes import tags_to_words
from kexue.tagging.tagger import ENCODERS, HEADS, UNITS, Tagger


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tag train`` and ``tag predict`` on the main CLI's subparsers; returns ``tag``."""
    tag = subparsers.add_parser(
        "tag", help="train / run a word segmenter or NER tagger (CRF, MEMM, ...)"
    )
    sub = tag.add_subparsers(dest="tag_command", metavar="SUBCOMMAND", parser_class=type(tag))

    fmt = argparse.ArgumentDefaultsHelpFormatter
    t = sub.add_parser("train", help="train a tagger and save it to --out", formatter_class=fmt)
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="NAME", help="registered dataset, e.g. ud-gsd-cws, msra-ner")
    src.add_argument("--train", metavar="FILE", help="your own training file")
    t.add_argument("--dev", metavar="FILE", help="your own evaluation file (with --train)")
    t.add_argument("--format", choices=FORMATS, help="format of --train/--dev files")
    t.add_argument("--token-col", type=int, default=0, help="CoNLL token column")
    t.add_argument("--tag-col", type=int, default=-1, help="CoNLL tag column (-1: last)")
    t.add_argument("--head", choices=HEADS, default="crf", help="tagging head")
    t.add_argument("--encoder", choices=ENCODERS, default="cnn", help="character encoder")
    tr = t.add_argument_group("Transformer encoder (--encoder transformer)")
    tr.add_argument("--num-heads", type=int, help="attention heads (None: 4)")
    tr.add_argument("--pattern", choices=("full", "local"), help="attention pattern (None: full)")
    tr.add_argument("--window", type=int, help="local attention half-width (with --pattern local)")
    tr.add_argument("--positions", choices=POSITIONS, help="position encoding (None: sinusoidal)")
    t.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    t.add_argument(
        "--units",
        choices=UNITS,
        help="what a token is: chars (Chinese; the default) or words (e.g. English CoNLL); "
        "stored in the model and used by `tag predict` to split text",
    )
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--epochs", type=int, default=3, help="passes over the training data")
    t.add_argument("--batch-size", type=int, default=32, help="sentences per step")
    t.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    t.add_argument("--embed-dim", type=int, default=128, help="character embedding size")
    t.add_argument("--hidden-dim", type=int, default=128, help="encoder width")
    t.add_argument("--num-layers", type=int, default=3, help="encoder layers")
    t.add_argument("--max-len", type=int, default=100, help="cut training sentences to this length")
    t.add_argument(
        "--max-train", type=int, default=0, help="use the first N training sentences (0: all)"
    )
    t.add_argument("--constrained", action="store_true", help="forbid illegal tag transitions")
    t.add_argument("--seed", type=int, default=0, help="seeds the model and the data order")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="tag text lines with a trained tagger", formatter_class=fmt)
    p.add_argument("--model", required=True, metavar="DIR", help="directory written by `tag train`")
    p.add_argument("--input", default="-", metavar="FILE", help="text lines (-: stdin)")
    p.add_argument("--output", default="-", metavar="FILE", help="where to write (-: stdout)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_predict)
    return tag


# -- train --------------------------------------------------------------------------------------
def _load_named(name: str) -> tuple[list, list, str]:
    from kexue import data

    if name not in data.DATASETS:
        raise ValueError(f"unknown dataset {name!r}; see `kexue data list`")
    train = data.load(name, "train")
    dev: list = []
    for split in ("dev", "test"):
        try:
            dev = data.load(name, split)
            break
        except (ValueError, KeyError):
            continue
    sample = train[0] if train else None
    task = "ner" if isinstance(sample, tuple) else "cws"
    return train, dev, task


def _encoder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("num_heads", "pattern", "window", "positions")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.encoder != "transformer":
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise ValueError(f"{flags} need --encoder transformer")
        return {}
    if given.get("pattern") == "local" and "window" not in given:
        raise ValueError("--pattern local needs --window")
    if "window" in given and given.get("pattern") != "local":
        raise ValueError("--window needs --pattern local")
    return given


def _validate(args: argparse.Namespace) -> None:
    """Every numeric option at the boundary; messages name the flag."""
    for flag, minimum in (
        ("epochs", 1), ("batch_size", 1), ("embed_dim", 1), ("hidden_dim", 1),
        ("num_layers", 1), ("max_len", 1), ("max_train", 0), ("num_heads", 1), ("window", 1),
    ):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            check_positive_int(value, "--" + flag.replace("_", "-"), minimum)
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    out = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / "train" / "checkpoints").is_dir():
        raise ValueError(f"--resume: no checkpoints in {out / 'train'} to continue from")


def _read(args: argparse.Namespace) -> tuple[list, list, str, list | None, list | None]:
    if args.data:
        train, dev, task = _load_named(args.data)
        return train, dev, task, None, None
    if not args.format:
        raise ValueError("--train needs --format segmented|conll|cluener")
    train, task, t_orig = read_tagged_file(args.train, args.format, args.token_col, args.tag_col)
    dev, d_orig = [], None
    if args.dev:
        dev, _, d_orig = read_tagged_file(args.dev, args.format, args.token_col, args.tag_col)
    return train, dev, task, t_orig, d_orig


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag train``."""
    _validate(args)
    encoder_kwargs = _encoder_kwargs(args)
    train, dev, task, t_orig, d_orig = _read(args)
    if args.max_train:
        train = train[: args.max_train]
        t_orig = t_orig[: args.max_train] if t_orig is not None else None
    if task == "cws":
        if args.units == "words":
            raise ValueError("--units words is for entity data; word segmentation tags characters")
        train_ex, dev_ex = cws_examples(train, args.max_len), cws_examples(dev)
    else:
        train_ex, dev_ex = ner_examples(train, args.max_len), ner_examples(dev)
        t_orig = chunk_origins(train, t_orig, args.max_len) if t_orig is not None else None
        d_orig = chunk_origins(dev, d_orig) if d_orig is not None else None
    if not train_ex:
        raise ValueError("the training data has no sentences")
    units = args.units or "chars"
    if task == "ner":
        prep = prepare_ner(
            train_ex, dev_ex, train_origins=t_orig, dev_origins=d_orig, constrained=args.constrained
        )
        train_ex, dev_ex = prep.train, prep.dev
        for msg in prep.messages:
            print(f"note: {msg}", file=sys.stderr)
        n_tok = sum(len(c) for c, _ in train_ex)
        mean_len = sum(len(x) for c, _ in train_ex for x in c) / max(n_tok, 1)
        if units == "chars" and mean_len > 1.5:
            print(
                f"note: tokens average {mean_len:.1f} characters but --units is chars; "
                "pass --units words for word-level data",
                file=sys.stderr,
            )
    print(f"units: {units}" + ("" if args.units else " (default; set with --units)"))
    seed_everything(args.seed, deterministic=False)  # before any model is built
    tagger = new_tagger(
        train_ex,
        task,
        head=args.head,
        encoder=args.encoder,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        constrained=args.constrained,
        units=units,
        encoder_kwargs=encoder_kwargs,
    )
    hist = fit_tagger(
        tagger,
        train_ex,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
        out_dir=Path(args.out) / "train",
        resume=args.resume,
        overwrite=args.overwrite,
    )
    extra: dict[str, Any] = {"task": task, "units": units, "train_sentences": len(train_ex)}
    if dev_ex:
        scores = evaluate(tagger, dev_ex, task)
        extra["dev"] = {k: scores[k] for k in ("precision", "recall", "f1")}
    tagger.save(args.out, extra=extra)
    summary = f"saved {args.head} tagger ({task}, {len(tagger.tags)} tags, {units}) to {args.out}"
    if "dev" in extra:
        d = extra["dev"]
        summary += f"; dev P {d['precision']:.4f} R {d['recall']:.4f} F1 {d['f1']:.4f}"
    print(summary)
    del hist
    return 0


# -- predict ------------------------------------------------------------------------------------
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def format_prediction(
    chars: list[str], tags: list[str], task: str, as_json: bool, sep: str = "", scheme: str = "BIO"
) -> str:
    """One output line: segmented words (CWS) or entities ``LABEL:text`` (NER), or JSON.

    Entities are read from the tags by the same rule as evaluation
    (:func:`kexue.tagging.recipe.output_spans`: strict spans in the model's ``scheme``), so the
    dev F1 printed by ``tag train`` can be recomputed from this output. ``sep`` joins tokens
    back into text (``" "`` for word-level models).
    """
    if task == "cws":
        words = tags_to_words(chars, tags) if chars else []
        return json.dumps({"words": words}, ensure_ascii=False) if as_json else " ".join(words)
    spans = output_spans(tags, scheme)
    if as_json:
        ents = [
            {"text": sep.join(chars[s:e]), "label": lab, "start": s, "end": e}
            for lab, s, e in spans
        ]
        return json.dumps({"text": sep.join(chars), "entities": ents}, ensure_ascii=False)
    ents = " ".join(f"{lab}:{sep.join(chars[s:e])}" for lab, s, e in spans)
    return sep.join(chars) + "\t" + ents


def split_units(line: str, task: str, units: str) -> list[str]:
    """Tokens of one input line: CWS drops white space and tags characters; NER splits into
    characters (``units="chars"``, white space kept as text) or on white space (``"words"``)."""
    if task == "cws":
        return list("".join(line.split()))
    return line.split() if units == "words" else list(line)


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag predict``."""
    tagger = Tagger.load(args.model)
    extra = getattr(tagger, "extra", {})
    task = extra.get("task") or ("cws" if tagger.config.get("scheme") == "BMES" else "ner")
    units = tagger.units
    if args.input == "-":
        lines = sys.stdin.read().splitlines()
    else:
        if not Path(args.input).is_file():
            raise FileNotFoundError(f"no such file: {args.input}")
        lines = Path(args.input).read_text(encoding="utf-8").splitlines()
    if args.output != "-" and Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a directory")
    print(f"units: {units} (from {args.model})", file=sys.stderr)
    if units == "words":
        for n, ln in enumerate(lines, start=1):
            if len(_CJK.findall(ln)) > 1 and len(ln.split()) == 1:
                print(
                    f"note: {args.input}, line {n}: unsegmented CJK text, but the model's units "
                    "are words (one token per white-space-separated word)",
                    file=sys.stderr,
                )
                break
    sents = [split_units(ln, task, units) for ln in lines]
    preds = tagger.predict(sents)
    sep = " " if units == "words" else ""
    scheme = tagger.config.get("scheme") or "BIO"
    out = "\n".join(
        format_prediction(c, p, task, args.json, sep, scheme) for c, p in zip(sents, preds)
    )
    if args.output == "-":
        if out:
            print(out)
    else:
        atomic_write_text(args.output, out + ("\n" if out else ""))
    return 0
