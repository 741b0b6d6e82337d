"""``kexue tag train | evaluate | predict``: train a tagger on your data, score it, use it.

Word segmentation data (``--format segmented``: one sentence per line, words separated by
spaces) is tagged BMES; entity data (``--format conll``: one ``token ... tag`` line per token,
blank line between sentences; ``--format cluener``: CLUENER json lines) is tagged BIO or BIOES as
found in the file. ``--data NAME`` uses a registered dataset (``kexue data list``).

Training evaluates on the dev data every epoch (``--eval-every`` steps), keeps the weights of the
best dev score, stops after ``--patience`` evaluations without improvement or after
``--max-minutes``; without a dev file, every 10th training sentence (``--dev-fraction``) is held
out for it. The defaults were chosen by runs on the shipped sets (README, "Tag your own data").

User errors raise ``ValueError`` with a one-line message; the main CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int
from kexue.core.io import atomic_write_json, check_out_dir
from kexue.core.seed import seed_everything
from kexue.tagging.commands import LEXICON, cmd_evaluate, cmd_predict
from kexue.tagging.encoders import POSITIONS
from kexue.tagging.formats import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    format_prediction,
    split_units,
)
from kexue.tagging.recipe import (
    FORMATS,
    chunk_origins,
    cws_examples,
    evaluate,
    fit_tagger,
    load_named,
    ner_examples,
    new_bert_tagger,
    new_tagger,
    prepare_ner,
    read_tagged_file,
    training_lexicon,
)
from kexue.tagging.tagger import ENCODERS, HEADS, UNITS, Tagger

__all__ = ["add_subparser", "format_prediction", "split_units"]
TRAIN_SCORE_SENTENCES = 5000  # the train F1 stored at the end is over at most this many
MAX_HELD_OUT = 2000  # sentences held out of the training data for dev when there is no dev
# defaults of `tag train`, picked from runs on the shipped sets (README, "Tag your own data")
DEFAULTS: dict[str, Any] = {
    "epochs": 30, "patience": 5, "batch_size": 32, "lr": 2e-3, "dropout": 0.1, "min_freq": 1,
    "word_dropout": 0.05, "char_filters": 50, "encoder_lr": 5e-5,
}  # fmt: skip


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tag train | evaluate | predict`` on the main CLI's subparsers; returns ``tag``."""
    tag = subparsers.add_parser(
        "tag", help="train / evaluate / run a word segmenter or NER tagger (CRF, MEMM, ...)"
    )
    sub = tag.add_subparsers(dest="tag_command", metavar="SUBCOMMAND", parser_class=type(tag))
    fmt = argparse.ArgumentDefaultsHelpFormatter
    _add_train(
        sub.add_parser("train", help="train a tagger and save it to --out", formatter_class=fmt)
    )
    e = sub.add_parser(
        "evaluate", help="score a trained tagger on a test file", formatter_class=fmt
    )
    e.add_argument("--model", required=True, metavar="DIR", help="directory written by `tag train`")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--test", metavar="FILE", help="gold-tagged test file")
    src.add_argument("--data", metavar="NAME", help="registered dataset (scored on --split)")
    e.add_argument("--split", default="test", help="split of --data")
    e.add_argument(
        "--format",
        choices=FORMATS,
        help="format of --test (default: the model's "
        "task: segmented for segmenters, conll for entity models)",
    )
    e.add_argument("--token-col", type=int, default=0, help="CoNLL token column")
    e.add_argument("--tag-col", type=int, default=-1, help="CoNLL tag column (-1: last)")
    e.add_argument(
        "--output",
        metavar="FILE",
        help="write the predictions here, in the test "
        "file's format (conll: token<TAB>predicted tag)",
    )
    e.add_argument("--json", metavar="FILE", help="write all scores as JSON here")
    e.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="tag text with a trained tagger", formatter_class=fmt)
    p.add_argument("--model", required=True, metavar="DIR", help="directory written by `tag train`")
    p.add_argument("--input", default="-", metavar="FILE", help="input text (-: stdin)")
    p.add_argument("--output", default="-", metavar="FILE", help="where to write (-: stdout)")
    p.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default="raw",
        help="raw lines, segmented lines (words separated by spaces) or CoNLL",
    )
    p.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="text",
        help="text (words / sentence<TAB>LABEL:entity ...), conll (token<TAB>tag), "
        "json (spans) or segmented (segmenters)",
    )
    p.add_argument("--json", action="store_true", help="same as --output-format json")
    p.add_argument("--token-col", type=int, default=0, help="CoNLL input token column")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch")
    p.add_argument(
        "--chunk",
        type=int,
        default=2048,
        help="sentences read, tagged and written at a time (the input is streamed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
    return tag


def _add_train(t: argparse.ArgumentParser) -> None:
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="NAME", help="registered dataset, e.g. ud-gsd-cws, msra-ner")
    src.add_argument("--train", metavar="FILE", help="your own training file")
    t.add_argument("--dev", metavar="FILE", help="your own dev file for model selection")
    t.add_argument(
        "--dev-fraction",
        type=float,
        default=0.1,
        help="without a dev file or "
        "split: hold out this share of the training sentences (every k-th, at most "
        "2000) for model selection (0: no dev, keep the last weights)",
    )
    t.add_argument("--format", choices=FORMATS, help="format of --train/--dev files")
    t.add_argument("--token-col", type=int, default=0, help="CoNLL token column")
    t.add_argument("--tag-col", type=int, default=-1, help="CoNLL tag column (-1: last)")
    t.add_argument("--head", choices=HEADS, default="crf", help="tagging head")
    t.add_argument(
        "--encoder",
        choices=(*ENCODERS, "bert"),
        default="cnn",
        help="token encoder (bert: a pretrained BERT from --bert-dir)",
    )
    bt = t.add_argument_group("pretrained BERT encoder (--encoder bert)")
    bt.add_argument(
        "--bert-dir",
        metavar="DIR",
        help="local HuggingFace BERT directory, or zh-char-bert (shipped with kexue)",
    )
    bt.add_argument(
        "--encoder-lr",
        type=float,
        default=DEFAULTS["encoder_lr"],
        help="learning rate of the BERT (--lr is the head's)",
    )
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
    t.add_argument(
        "--epochs",
        type=int,
        default=DEFAULTS["epochs"],
        help="at most this many passes over the training data",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=DEFAULTS["patience"],
        help="stop after this many dev evaluations without a better dev F1 (0: never)",
    )
    t.add_argument(
        "--eval-every", type=int, default=0, help="evaluate dev every N steps (0: once per epoch)"
    )
    t.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop cleanly after this "
        "many minutes of training, keeping the best dev weights (0: no limit)",
    )
    t.add_argument(
        "--batch-size", type=int, default=DEFAULTS["batch_size"], help="sentences per step"
    )
    t.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="Adam learning rate")
    t.add_argument(
        "--dropout",
        type=float,
        default=DEFAULTS["dropout"],
        help="dropout on embeddings and encoder output",
    )
    t.add_argument("--embed-dim", type=int, default=128, help="token embedding size")
    t.add_argument("--hidden-dim", type=int, default=128, help="encoder width")
    t.add_argument("--num-layers", type=int, default=3, help="encoder layers")
    u = t.add_argument_group("unknown tokens")
    u.add_argument(
        "--min-freq",
        type=int,
        default=DEFAULTS["min_freq"],
        help="tokens seen fewer times in training map to <unk>",
    )
    u.add_argument(
        "--word-dropout",
        type=float,
        default=DEFAULTS["word_dropout"],
        help="in training, replace each token by <unk> with this probability",
    )
    u.add_argument(
        "--char-filters",
        type=int,
        help="char CNN output size for --units words "
        f"(None: {DEFAULTS['char_filters']} with --units words; 0: no char CNN)",
    )
    u.add_argument(
        "--lowercase",
        action="store_true",
        help="lowercase tokens for the vocabulary and add a case feature (Title, UPPER, ...)",
    )
    t.add_argument("--max-len", type=int, default=100, help="cut training sentences to this length")
    t.add_argument(
        "--max-train", type=int, default=0, help="use the first N training sentences (0: all)"
    )
    t.add_argument("--constrained", action="store_true", help="forbid illegal tag transitions")
    t.add_argument("--seed", type=int, default=0, help="seeds the model and the data order")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


# -- train --------------------------------------------------------------------------------------
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


def _check_unit_interval(value: float, flag: str) -> None:
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{flag} must be in [0, 1), got {value}")


def _validate(args: argparse.Namespace) -> None:
    """Every numeric option at the boundary; messages name the flag."""
    for flag, minimum in (
        ("epochs", 1), ("batch_size", 1), ("embed_dim", 1), ("hidden_dim", 1),
        ("num_layers", 1), ("max_len", 1), ("max_train", 0), ("num_heads", 1), ("window", 1),
        ("patience", 0), ("eval_every", 0), ("min_freq", 1), ("char_filters", 0),
    ):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            check_positive_int(value, "--" + flag.replace("_", "-"), minimum)
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if not math.isfinite(args.max_minutes) or args.max_minutes < 0:
        raise ValueError(f"--max-minutes must be a finite number >= 0, got {args.max_minutes}")
    for flag in ("dropout", "word_dropout", "dev_fraction"):
        _check_unit_interval(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.char_filters and args.units != "words":
        raise ValueError("--char-filters needs --units words (a character has no characters)")
    _validate_bert(args)
    out = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / "train" / "checkpoints").is_dir():
        raise ValueError(f"--resume: no checkpoints in {out / 'train'} to continue from")


def _validate_bert(args: argparse.Namespace) -> None:
    if args.encoder != "bert":
        if args.bert_dir:
            raise ValueError("--bert-dir needs --encoder bert")
        return
    if not args.bert_dir:
        raise ValueError(
            "--encoder bert needs --bert-dir DIR (a local HuggingFace BERT, or zh-char-bert: "
            "the one shipped with kexue)"
        )
    from kexue.lm.shipped import SHIPPED, shipped_dir

    if args.bert_dir in SHIPPED:
        args.bert_dir = str(shipped_dir(args.bert_dir))
    if not Path(args.bert_dir).is_dir():
        raise ValueError(f"--bert-dir {args.bert_dir}: no such directory")
    if not math.isfinite(args.encoder_lr) or args.encoder_lr <= 0:
        raise ValueError(f"--encoder-lr must be a finite number > 0, got {args.encoder_lr}")
    given = [f for f, on in (("--char-filters", args.char_filters), ("--lowercase",
             args.lowercase)) if on]  # fmt: skip
    if given:
        raise ValueError(f"{', '.join(given)} are for the cnn/bilstm/transformer encoders")


def _read(args: argparse.Namespace) -> tuple[list, list, str, list | None, list | None]:
    if args.data:
        train, dev, task = load_named(args.data)
        return train, dev, task, None, None
    if not args.format:
        raise ValueError("--train needs --format segmented|conll|cluener")
    train, task, t_orig = read_tagged_file(args.train, args.format, args.token_col, args.tag_col)
    dev, d_orig = [], None
    if args.dev:
        dev, _, d_orig = read_tagged_file(args.dev, args.format, args.token_col, args.tag_col)
    return train, dev, task, t_orig, d_orig


def hold_out(n: int, fraction: float, cap: int = MAX_HELD_OUT) -> list[int]:
    """Indices of the sentences held out for dev: every ``k``-th of ``n`` (``k = round(1 /
    fraction)``, the ``k``-th, ``2k``-th, ...), at most ``cap``; none for ``fraction = 0`` or
    fewer than 50 sentences."""
    if fraction <= 0 or n < 50:
        return []
    k = max(round(1 / fraction), 2)
    return list(range(k - 1, n, k))[:cap]


def _split_dev(args, train, dev, t_orig, d_orig):
    """Without dev data, hold out part of the training data (printed)."""
    if dev or args.dev:
        return train, dev, t_orig, d_orig
    held = hold_out(len(train), args.dev_fraction)
    if not held:  # tiny data or --dev-fraction 0: train for --epochs, keep the last weights
        return train, dev, t_orig, d_orig
    hs = set(held)
    keep = [i for i in range(len(train)) if i not in hs]
    print(f"note: no dev data: held out {len(held)} of {len(train)} training sentences "
          "(every k-th) for model selection", file=sys.stderr)  # fmt: skip
    pick = lambda xs, idx: None if xs is None else [xs[i] for i in idx]  # noqa: E731
    return pick(train, keep), pick(train, held), pick(t_orig, keep), pick(t_orig, held)


def _features(args: argparse.Namespace, units: str) -> dict[str, Any]:
    filters = args.char_filters
    if filters is None:
        filters = DEFAULTS["char_filters"] if units == "words" else 0
    feats: dict[str, Any] = {"word_dropout": args.word_dropout}
    if args.lowercase:
        feats["lowercase"] = True
    if filters:
        feats["char_filters"] = filters
    return feats


def _examples(args, train, dev, task, t_orig, d_orig):
    if task == "cws":
        return cws_examples(train, args.max_len), cws_examples(dev), []
    train_ex, dev_ex = ner_examples(train, args.max_len), ner_examples(dev)
    t_orig = chunk_origins(train, t_orig, args.max_len) if t_orig is not None else None
    d_orig = chunk_origins(dev, d_orig) if d_orig is not None else None
    if not train_ex:
        raise ValueError("the training data has no sentences")
    prep = prepare_ner(
        train_ex, dev_ex, train_origins=t_orig, dev_origins=d_orig, constrained=args.constrained
    )
    return prep.train, prep.dev, prep.messages


def _train_score(tagger: Tagger, train_ex: list, task: str) -> dict[str, Any]:
    step = max(1, -(-len(train_ex) // TRAIN_SCORE_SENTENCES))
    sample = train_ex[::step]
    sc = evaluate(tagger, sample, task)
    return {"f1": sc["f1"], "precision": sc["precision"], "recall": sc["recall"],
            "sentences": len(sample), "of": len(train_ex)}  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag train``."""
    _validate(args)
    encoder_kwargs = _encoder_kwargs(args)
    train, dev, task, t_orig, d_orig = _read(args)
    if task == "cws" and args.units == "words":
        raise ValueError("--units words is for entity data; word segmentation tags characters")
    if args.max_train:
        train = train[: args.max_train]
        t_orig = t_orig[: args.max_train] if t_orig is not None else None
    train, dev, t_orig, d_orig = _split_dev(args, train, dev, t_orig, d_orig)
    train_ex, dev_ex, messages = _examples(args, train, dev, task, t_orig, d_orig)
    if not train_ex:
        raise ValueError("the training data has no sentences")
    for msg in messages:
        print(f"note: {msg}", file=sys.stderr)
    units = args.units or "chars"
    if task == "ner":
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
    tagger = _build(args, train_ex, task, units, encoder_kwargs)
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
        dev=dev_ex or None,
        task=task,
        eval_every=args.eval_every or None,
        patience=args.patience or None,
        max_seconds=args.max_minutes * 60 or None,
        encoder_lr=args.encoder_lr if args.encoder == "bert" else None,
    )
    return _finish(args, tagger, hist, train_ex, dev_ex, task, units)


def _build(args: argparse.Namespace, train_ex: list, task: str, units: str, enc_kw: dict) -> Any:
    """The untrained tagger the flags describe."""
    if args.encoder == "bert":
        return new_bert_tagger(
            train_ex, task, args.bert_dir, head=args.head, dropout=args.dropout,
            constrained=args.constrained, units=units,
        )  # fmt: skip
    return new_tagger(
        train_ex,
        task,
        min_freq=args.min_freq,
        head=args.head,
        encoder=args.encoder,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        dropout=args.dropout,
        constrained=args.constrained,
        units=units,
        encoder_kwargs=enc_kw,
        features=_features(args, units),
    )


def _finish(args, tagger, hist, train_ex, dev_ex, task, units) -> int:
    """Score dev and train with the kept weights, save the model and its lexicon, print."""
    extra: dict[str, Any] = {"task": task, "units": units, "train_sentences": len(train_ex)}
    extra["args"] = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    extra.update(
        train_seconds=hist["wall_time"], steps=hist["steps"], epochs_run=hist["epochs"],
        stopped_by=hist["stopped_by"], dev_sentences=len(dev_ex),
    )  # fmt: skip
    if dev_ex:
        scores = evaluate(tagger, dev_ex, task)
        extra["dev"] = {k: scores[k] for k in ("precision", "recall", "f1")}
        extra["best"] = hist["best"]
    extra["train_scores"] = _train_score(tagger, train_ex, task)
    tagger.save(args.out, extra=extra)
    sep = " " if units == "words" else ""
    atomic_write_json(Path(args.out) / LEXICON, training_lexicon(train_ex, task, sep))
    summary = f"saved {args.head} tagger ({task}, {len(tagger.tags)} tags, {units}) to {args.out}"
    summary += f" after {hist['epochs']:.2f} epochs, {hist['wall_time']:.0f} s"
    if hist["stopped_by"]:
        summary += f" (stopped: {hist['stopped_by']})"
    if "dev" in extra:
        d, b = extra["dev"], extra["best"]
        summary += (
            f"; best dev at epoch {b['epoch']:.2f}: P {d['precision']:.4f} R {d['recall']:.4f} "
            f"F1 {d['f1']:.4f}"
        )
    summary += f"; train F1 {extra['train_scores']['f1']:.4f}"
    print(summary)
    return 0
