"""``kexue mrc train | predict | evaluate``: reading comprehension with the MLM reader (or the AR
and span baselines) on the shipped sets or your own SQuAD-style / WebQA-style JSON.

``--model`` is a local HF BERT directory (``kexue lm pretrain`` output, or a Chinese BERT you
downloaded elsewhere); the default ``zh-char-bert`` is the BERT shipped in the package;
``--model tiny`` uses a smaller BERT pretrained here (cached under ``$KEXUE_CACHE``, pretrained
on first use). User errors raise ``ValueError`` /
``FileNotFoundError``: the main CLI prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from kexue.core.io import check_out_dir
from kexue.mrc.features import answer_in_window
from kexue.mrc.recipe import (
    KINDS,
    evaluate,
    fit,
    load_examples,
    load_reader,
    make_reader,
    save_reader,
)

DATASETS = ("cmrc2018", "webqa-sample")


def _positive(name: str, v: int) -> None:
    if v < 1:
        raise ValueError(f"--{name} must be >= 1, got {v}")


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``mrc train|predict|evaluate`` on the main CLI; returns ``mrc``."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    mrc = subparsers.add_parser("mrc", help="reading comprehension: MLM / AR / span readers")
    sub = mrc.add_subparsers(dest="mrc_command", metavar="SUBCOMMAND", parser_class=type(mrc))

    t = sub.add_parser("train", help="fine-tune a reader and save it to --out", formatter_class=fmt)
    t.add_argument("--reader", choices=sorted(KINDS), default="mlm")
    t.add_argument(
        "--model",
        default="zh-char-bert",
        metavar="DIR",
        help="pretrained BERT directory, 'zh-char-bert' (the BERT shipped in the package) or "
        "'tiny' (a 128-wide BERT pretrained here on first use and cached)",
    )
    src = t.add_mutually_exclusive_group()
    src.add_argument("--data", choices=DATASETS, default="cmrc2018")
    src.add_argument("--train", metavar="FILE", help="your SQuAD-style or WebQA-style JSON")
    t.add_argument("--split", default=None, help="dataset split (cmrc2018: dev)")
    t.add_argument("--format", choices=("squad", "webqa"), help="format of --train (guessed)")
    t.add_argument("--limit", type=int, default=0, help="first N questions (0: all)")
    t.add_argument("--out", required=True, metavar="DIR")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument(
        "--warmup", type=int, default=None, help="warm-up steps (default: min(50, steps / 10))"
    )
    t.add_argument("--max-answer-len", type=int, default=16, help="answer slots L")
    t.add_argument("--max-question-len", type=int, default=32)
    t.add_argument("--max-passage-len", type=int, default=128, help="passage window (tokens)")
    t.add_argument(
        "--stride",
        type=int,
        default=None,
        help="step between passage windows (default: half of --max-passage-len)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from --out/train checkpoints")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--require-answer", action=argparse.BooleanOptionalAction, default=True,
                   help="never answer empty: every question is answered in its passages (CMRC, "
                   "SQuAD 1, WebQA); --no-require-answer lets a reader say 'no answer'")  # fmt: skip
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="answer questions", formatter_class=fmt)
    p.add_argument("--model", required=True, metavar="DIR", help="directory from `mrc train`")
    p.add_argument("--question", help="one question (with --passage)")
    p.add_argument("--passage", action="append", help="a passage; repeat for several")
    p.add_argument(
        "--input",
        metavar="FILE",
        help='JSON lines {"question": ..., "passages": [...]} ("-": stdin)',
    )
    p.add_argument(
        "--unconstrained",
        action="store_true",
        help="MLM reader: slot-by-slot argmax instead of passage-constrained decoding",
    )
    _require_override(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="EM / F1 / Final on a labelled set", formatter_class=fmt)
    e.add_argument("--model", required=True, metavar="DIR", help="directory from `mrc train`")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--data", choices=DATASETS, default="cmrc2018")
    src.add_argument("--test", metavar="FILE", help="your SQuAD-style or WebQA-style JSON")
    e.add_argument("--split", default=None, help="dataset split (cmrc2018: trial)")
    e.add_argument("--format", choices=("squad", "webqa"))
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--predictions", metavar="FILE", help="also write {id: answer} JSON here")
    _require_override(e)
    e.set_defaults(func=cmd_evaluate)
    return mrc


def _model_dir(name: str, progress: bool) -> Path:
    from kexue.lm.shipped import SHIPPED, shipped_dir

    if name in SHIPPED:
        return shipped_dir(name)
    if name != "tiny":
        path = Path(name)
        if not path.is_dir():
            raise FileNotFoundError(f"--model {name}: no such directory")
        return path
    from kexue.lm import PretrainConfig, cached_pretrained

    # the quick preset's tiny BERT of experiment mlm-mrc (same cache entry)
    cfg = PretrainConfig(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        max_positions=512,
        max_len=128,
        steps=600,
        batch_size=32,
        lr=1e-3,
        warmup=60,
    )
    return cached_pretrained(cfg, progress=progress)[0]


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``kexue mrc train``."""
    if args.stride is None:
        args.stride = max(1, args.max_passage_len // 2)
    for name in (
        "steps",
        "batch_size",
        "max_answer_len",
        "max_question_len",
        "max_passage_len",
        "stride",
    ):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    if not 0 < args.lr < 1:
        raise ValueError(f"--lr must be in (0, 1), got {args.lr}")
    if args.stride > args.max_passage_len:
        raise ValueError(
            f"--stride ({args.stride}) must be <= --max-passage-len ({args.max_passage_len})"
        )
    if args.warmup is None:
        args.warmup = min(50, max(1, args.steps // 10))
    if args.warmup > args.steps:
        raise ValueError(f"--warmup ({args.warmup}) must not exceed --steps ({args.steps})")
    out = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / "train" / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: no checkpoints under {out / 'train'}")
    source = args.train or args.data
    split = args.split or ("dev" if source == "cmrc2018" else None)
    examples = load_examples(source, split, fmt=args.format, limit=args.limit)
    missing = sum(
        1
        for ex in examples
        for p, a in zip(ex.passages, ex.passage_answers, strict=True)
        if a and not answer_in_window(a, p)
    )
    if missing:
        n = sum(1 for ex in examples for a in ex.passage_answers if a)
        print(
            f"warning: {missing} of {n} labelled passages do not contain their answer; they "
            "are trained as 'no answer' passages",
            file=sys.stderr,
        )
    model_dir = _model_dir(args.model, not args.no_progress)
    if args.overwrite and out.is_dir():
        shutil.rmtree(out)
    from kexue.core.seed import seed_everything

    seed_everything(args.seed)
    reader = make_reader(
        args.reader,
        model_dir,
        max_answer_len=args.max_answer_len,
        max_question_len=args.max_question_len,
        max_passage_len=args.max_passage_len,
        stride=args.stride,
        require_answer=args.require_answer,
    )
    hist = fit(
        reader,
        examples,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        seed=args.seed,
        out_dir=out / "train",
        resume=args.resume,
        progress=not args.no_progress,
    )
    save_reader(
        reader,
        out,
        extra={
            "trained_on": source,
            "questions": len(examples),
            "steps": hist["steps"],
            "base_model": str(model_dir),
        },
    )
    loss = hist["losses"][-1] if hist["losses"] else float("nan")
    print(
        f"saved {args.reader} reader ({len(examples)} questions, {hist['steps']} steps, "
        f"last loss {loss:.4f}) to {out}"
    )
    return 0


def _queries(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if args.input and (args.question or args.passage):
        raise ValueError("give --input or --question/--passage, not both")
    if not args.input:
        if not args.question or not args.passage:
            raise ValueError("give --question and at least one --passage (or --input FILE)")
        return [(args.question, args.passage)]
    if args.input != "-" and not Path(args.input).is_file():
        raise FileNotFoundError(f"--input {args.input}: no such file")
    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text("utf-8")
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--input line {i}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or "question" not in obj or "passages" not in obj:
            raise ValueError(f'--input line {i}: expected {{"question": ..., "passages": [...]}}')
        out.append((obj["question"], obj["passages"]))
    if not out:
        raise ValueError("--input has no questions")
    return out


def _require_override(p: argparse.ArgumentParser) -> None:
    p.add_argument("--require-answer", action=argparse.BooleanOptionalAction, default=None,
                   help="override the trained reader's setting (default: as trained)")  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {"constrained": False} if getattr(args, "unconstrained", False) else {}
    if args.require_answer is not None:
        out["require_answer"] = args.require_answer
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of ``kexue mrc predict``: one JSON line per question."""
    _positive("batch-size", args.batch_size)
    queries = _queries(args)
    reader = load_reader(args.model, **_overrides(args))
    for (q, _), (answer, score) in zip(
        queries, reader.predict_batch(queries, args.batch_size), strict=True
    ):
        print(
            json.dumps(
                {"question": q, "answer": answer, "score": round(score, 6)}, ensure_ascii=False
            )
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``kexue mrc evaluate``: prints the metrics as one JSON object."""
    _positive("batch-size", args.batch_size)
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    source = args.test or args.data
    split = args.split or ("trial" if source == "cmrc2018" else None)
    examples = load_examples(source, split, fmt=args.format, limit=args.limit)
    reader = load_reader(args.model, **_overrides(args))
    if args.predictions and Path(args.predictions).is_dir():
        raise ValueError(f"--predictions {args.predictions} is a directory; give a file path")
    res = evaluate(reader, examples, batch_size=args.batch_size, progress=True)
    preds = res.pop("predictions")
    if args.predictions:
        Path(args.predictions).write_text(json.dumps(preds, ensure_ascii=False, indent=1))
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in res.items()}))
    return 0
