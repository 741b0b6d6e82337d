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
import sys
from pathlib import Path
from typing import Any

from kexue.tagging.encoders import POSITIONS
from kexue.tagging.recipe import (
    cws_examples,
    evaluate,
    fit_tagger,
    ner_examples,
    new_tagger,
)
from kexue.tagging.schemes import tags_to_spans, tags_to_words
from kexue.tagging.tagger import ENCODERS, HEADS, Tagger

FORMATS = ("segmented", "conll", "cluener")


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tag train`` and ``tag predict`` on the main CLI's subparsers; returns ``tag``."""
    tag = subparsers.add_parser(
        "tag", help="train / run a word segmenter or NER tagger (CRF, MEMM, ...)"
    )
    sub = tag.add_subparsers(dest="tag_command", metavar="SUBCOMMAND", parser_class=type(tag))

    t = sub.add_parser("train", help="train a tagger and save it to --out")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="NAME", help="registered dataset, e.g. ud-gsd-cws, msra-ner")
    src.add_argument("--train", metavar="FILE", help="your own training file")
    t.add_argument("--dev", metavar="FILE", help="your own evaluation file (with --train)")
    t.add_argument("--format", choices=FORMATS, help="format of --train/--dev files")
    t.add_argument("--token-col", type=int, default=0, help="CoNLL token column (default 0)")
    t.add_argument("--tag-col", type=int, default=-1, help="CoNLL tag column (default -1: last)")
    t.add_argument("--head", choices=HEADS, default="crf")
    t.add_argument("--encoder", choices=ENCODERS, default="cnn")
    tr = t.add_argument_group("Transformer encoder (--encoder transformer)")
    tr.add_argument("--num-heads", type=int, help="attention heads (default 4)")
    tr.add_argument("--pattern", choices=("full", "local"), help="attention pattern (default full)")
    tr.add_argument("--window", type=int, help="local attention half-width (with --pattern local)")
    tr.add_argument("--positions", choices=POSITIONS, help="position encoding (default sinusoidal)")
    t.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--embed-dim", type=int, default=128)
    t.add_argument("--hidden-dim", type=int, default=128)
    t.add_argument("--num-layers", type=int, default=3)
    t.add_argument("--max-len", type=int, default=100, help="cut training sentences to this length")
    t.add_argument("--max-train", type=int, default=0, help="use the first N training sentences")
    t.add_argument("--constrained", action="store_true", help="forbid illegal tag transitions")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="tag text lines with a trained tagger")
    p.add_argument("--model", required=True, metavar="DIR", help="directory written by `tag train`")
    p.add_argument("--input", default="-", metavar="FILE", help="text lines (default: stdin)")
    p.add_argument("--output", default="-", metavar="FILE", help="default: stdout")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_predict)
    return tag


# -- train --------------------------------------------------------------------------------------
def _read_file(path: str, fmt: str, token_col: int, tag_col: int) -> tuple[list, str]:
    from kexue.data import read_cluener, read_conll, read_segmented

    if not Path(path).is_file():
        raise ValueError(f"no such file: {path}")
    if fmt == "segmented":
        return read_segmented(path), "cws"
    if fmt == "conll":
        return read_conll(path, token_col=token_col, tag_col=tag_col), "ner"
    return read_cluener(path), "ner"


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


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag train``."""
    encoder_kwargs = _encoder_kwargs(args)
    if args.data:
        train, dev, task = _load_named(args.data)
    else:
        if not args.format:
            raise ValueError("--train needs --format segmented|conll|cluener")
        train, task = _read_file(args.train, args.format, args.token_col, args.tag_col)
        dev = _read_file(args.dev, args.format, args.token_col, args.tag_col)[0] if args.dev else []
    if args.max_train:
        train = train[: args.max_train]
    make = cws_examples if task == "cws" else ner_examples
    train_ex, dev_ex = make(train, args.max_len), make(dev)
    if not train_ex:
        raise ValueError("the training data has no sentences")
    tagger = new_tagger(
        train_ex,
        task,
        head=args.head,
        encoder=args.encoder,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        constrained=args.constrained,
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
    )
    n_tok = sum(len(c) for c, _ in train_ex)
    mean_len = sum(len(x) for c, _ in train_ex for x in c) / max(n_tok, 1)
    units = "words" if task == "ner" and mean_len > 1.5 else "chars"  # e.g. English CoNLL
    extra: dict[str, Any] = {"task": task, "units": units, "train_sentences": len(train_ex)}
    extra["seconds_per_epoch"] = round(hist["seconds_per_epoch"], 3)
    if dev_ex:
        scores = evaluate(tagger, dev_ex, task)
        extra["dev"] = {k: scores[k] for k in ("precision", "recall", "f1")}
    tagger.save(args.out, extra=extra)
    summary = f"saved {args.head} tagger ({task}, {len(tagger.tags)} tags) to {args.out}"
    if "dev" in extra:
        d = extra["dev"]
        summary += f"; dev P {d['precision']:.4f} R {d['recall']:.4f} F1 {d['f1']:.4f}"
    print(summary)
    return 0


# -- predict ------------------------------------------------------------------------------------
def format_prediction(
    chars: list[str], tags: list[str], task: str, as_json: bool, sep: str = ""
) -> str:
    """One output line: segmented words (CWS) or entities ``LABEL:text`` (NER), or JSON;
    ``sep`` joins tokens back into text (``" "`` for word-level models)."""
    if task == "cws":
        words = tags_to_words(chars, tags) if chars else []
        return json.dumps({"words": words}, ensure_ascii=False) if as_json else " ".join(words)
    scheme = "BIOES" if any(t[:2] in ("E-", "S-") for t in tags) else "BIO"
    spans = tags_to_spans(tags, scheme, strict=False)
    if as_json:
        ents = [
            {"text": sep.join(chars[s:e]), "label": lab, "start": s, "end": e}
            for lab, s, e in spans
        ]
        return json.dumps({"text": sep.join(chars), "entities": ents}, ensure_ascii=False)
    ents = " ".join(f"{lab}:{sep.join(chars[s:e])}" for lab, s, e in spans)
    return sep.join(chars) + "\t" + ents


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag predict``."""
    tagger = Tagger.load(args.model)
    extra = getattr(tagger, "extra", {})
    task = extra.get("task") or ("cws" if tagger.config.get("scheme") == "BMES" else "ner")
    words = extra.get("units") == "words"
    if args.input == "-":
        lines = sys.stdin.read().splitlines()
    else:
        if not Path(args.input).is_file():
            raise ValueError(f"no such file: {args.input}")
        lines = Path(args.input).read_text(encoding="utf-8").splitlines()
    # CWS: spaces in the input are not characters to tag; NER: keep the text as is
    if task == "cws":
        sents = [list("".join(ln.split())) for ln in lines]
    else:
        sents = [ln.split() if words else list(ln) for ln in lines]
    preds = tagger.predict(sents)
    sep = " " if words else ""
    out = "\n".join(format_prediction(c, p, task, args.json, sep) for c, p in zip(sents, preds))
    if args.output == "-":
        if out:
            print(out)
    else:
        Path(args.output).write_text(out + ("\n" if out else ""), encoding="utf-8")
    return 0
