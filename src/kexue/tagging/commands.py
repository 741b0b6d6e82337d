"""``kexue tag evaluate`` and ``kexue tag predict`` (registered by :mod:`kexue.tagging.cli`).

``evaluate`` scores a saved tagger on a gold file or a registered split: strict entity P/R/F1 per
type and overall, or SIGHAN word P/R/F1, with the unknown-word scores of
:mod:`kexue.tagging.scoring` (against the ``lexicon.json`` saved at training) and test F1 /
train F1. ``predict`` streams raw, segmented or CoNLL input in chunks through the tagger and
writes text, CoNLL, JSON spans or segmented words (:mod:`kexue.tagging.formats`).

User errors raise ``ValueError`` with a one-line message; the main CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from kexue.core.checks import check_positive_int
from kexue.core.io import atomic_write_json, atomic_write_text
from kexue.tagging.formats import cluener_line, format_sentence, iter_sentences
from kexue.tagging.recipe import (
    cws_examples,
    detect_scheme,
    evaluate,
    iob1_to_bio,
    load_named,
    load_split,
    ner_examples,
    read_tagged_file,
)
from kexue.tagging.schemes import tags_to_words

LEXICON = "lexicon.json"  # training words / tokens / entities, for the unknown-word scores


def load_model(directory: str) -> Any:
    """A saved tagger of any kind (:class:`Tagger` or :class:`kexue.tagging.bert.BertTagger`)."""
    from kexue.tagging.bert import load_tagger

    return load_tagger(directory)


def model_task(tagger: Any) -> str:
    """``"cws"`` or ``"ner"``: stored at training, else read from the scheme."""
    extra = getattr(tagger, "extra", {}) or {}
    return extra.get("task") or ("cws" if tagger.config.get("scheme") == "BMES" else "ner")


def _read_test(args: argparse.Namespace, task: str) -> tuple[list, str]:
    """``(examples, format)`` of the test data, checked against the model's task."""
    if args.data:
        data_task = load_named(args.data)[2]
        sents = load_split(args.data, args.split)
        fmt = "segmented" if data_task == "cws" else "conll"
    else:
        fmt = args.format or ("segmented" if task == "cws" else "conll")
        sents, data_task, _ = read_tagged_file(args.test, fmt, args.token_col, args.tag_col)
    if data_task != task:
        kind = {"cws": "word segmentation", "ner": "entity"}
        raise ValueError(
            f"the test data is {kind[data_task]} data but the model is a {kind[task]} model"
        )
    return (cws_examples(sents) if task == "cws" else ner_examples(sents)), fmt


def _fix_scheme(tagger: Any, examples: list) -> list:
    """Entity test data in the model's scheme (IOB1 read as BIO); a BIO/BIOES mismatch is an error."""
    scheme = tagger.config.get("scheme") or "BIO"
    found = detect_scheme(examples)
    if found != scheme:
        raise ValueError(f"the test data is {found} but the model was trained on {scheme}")
    return [(c, iob1_to_bio(t)[0]) if scheme == "BIO" else (c, t) for c, t in examples]


def _print_scores(sc: dict[str, Any], task: str) -> None:
    print(f"P {sc['precision']:.4f}  R {sc['recall']:.4f}  F1 {sc['f1']:.4f}  "
          f"(gold {sc['n_gold']}, predicted {sc['n_pred']}, correct {sc['correct']})")  # fmt: skip
    if task == "cws":
        if "oov_rate" in sc:
            print(f"OOV rate {sc['oov_rate']:.4f}  OOV recall {sc['oov_recall']:.4f}  "
                  f"IV recall {sc['iv_recall']:.4f}")  # fmt: skip
        return
    for lab, v in sc["per_label"].items():
        print(f"  {lab:<12} P {v['precision']:.4f}  R {v['recall']:.4f}  F1 {v['f1']:.4f}")
    if "oov_token_rate" in sc:
        o = sc["oov"]
        print(f"OOV tokens {sc['oov_token_rate']:.4f} of all, "
              f"{sc['oov_entity_token_rate']:.4f} inside entities; OOV entities "
              f"({o['n_gold']} gold) P {o['precision']:.4f} R {o['recall']:.4f} "
              f"F1 {o['f1']:.4f}")  # fmt: skip
    if "unseen" in sc:
        u = sc["unseen"]
        print(f"entities unseen in training ({u['n_gold']} gold) P {u['precision']:.4f} "
              f"R {u['recall']:.4f} F1 {u['f1']:.4f}")  # fmt: skip


def _write_predictions(path: str, examples: list, pred: list, fmt: str, tagger: Any) -> None:
    scheme = tagger.config.get("scheme") or "BIO"
    if fmt == "segmented":
        lines = [" ".join(tags_to_words(c, p)) for (c, _), p in zip(examples, pred)]
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    elif fmt == "conll":
        atomic_write_text(path, "\n".join(format_sentence(c, p, "ner", "conll")
                                          for (c, _), p in zip(examples, pred)))  # fmt: skip
    else:
        lines = [cluener_line(c, p, scheme) for (c, _), p in zip(examples, pred)]
        atomic_write_text(path, "".join(line + "\n" for line in lines))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag evaluate``."""
    check_positive_int(args.batch_size, "--batch-size")
    for flag in ("output", "json"):
        if getattr(args, flag) and Path(getattr(args, flag)).is_dir():
            raise ValueError(f"--{flag} {getattr(args, flag)} is a directory")
    tagger = load_model(args.model)
    task = model_task(tagger)
    examples, fmt = _read_test(args, task)
    if not examples:
        raise ValueError("the test data has no sentences")
    if task == "ner":
        examples = _fix_scheme(tagger, examples)
    lex_path = Path(args.model) / LEXICON
    lexicon = json.loads(lex_path.read_text(encoding="utf-8")) if lex_path.is_file() else None
    pred: list[list[str]] = []
    sc = evaluate(tagger, examples, task, args.batch_size, lexicon=lexicon, predictions=pred)
    where = args.test or f"{args.data}/{args.split}"
    print(f"{where}: {len(examples)} sentences, "
          f"{'word' if task == 'cws' else 'strict entity'} scores")  # fmt: skip
    _print_scores(sc, task)
    extra = getattr(tagger, "extra", {}) or {}
    train_sc = extra.get("train_scores")
    report: dict[str, Any] = {"model": str(args.model), "test": where, "task": task,
                              "sentences": len(examples), "scores": sc}  # fmt: skip
    report["training"] = {k: v for k, v in extra.items() if k != "train_scores"}
    report["config"] = {k: v for k, v in tagger.config.items() if k != "features"}
    feats = tagger.config.get("features")
    if feats:
        report["config"]["features"] = {k: v for k, v in feats.items() if k != "char_vocab"}
    if train_sc:
        ratio = sc["f1"] / train_sc["f1"] if train_sc["f1"] else float("nan")
        report.update(train_f1=train_sc["f1"], test_train_ratio=ratio)
        print(f"test F1 / train F1 = {sc['f1']:.4f} / {train_sc['f1']:.4f} = {ratio:.3f}")
    if args.output:
        _write_predictions(args.output, examples, pred, fmt, tagger)
    if args.json:
        atomic_write_json(args.json, report)
    return 0


# -- predict ------------------------------------------------------------------------------------
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def _input_lines(path: str):
    if path == "-":
        return sys.stdin
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return open(path, encoding="utf-8")  # noqa: SIM115 - closed by cmd_predict


def _warn_unsegmented(sent: list[str], where: str) -> None:
    if len(sent) == 1 and len(_CJK.findall(sent[0])) > 1:
        print(f"note: {where}: unsegmented CJK text, but the model's units are words (one "
              "token per white-space-separated word)", file=sys.stderr)  # fmt: skip


def _chunks(sentences, size: int):
    buf: list[list[str]] = []
    for s in sentences:
        buf.append(s)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of ``kexue tag predict``: streams the input in chunks of ``--chunk`` sentences."""
    from tqdm.auto import tqdm

    check_positive_int(args.batch_size, "--batch-size")
    check_positive_int(args.chunk, "--chunk")
    out_fmt = "json" if args.json else args.output_format
    tagger = load_model(args.model)
    task, units = model_task(tagger), tagger.units
    if out_fmt == "segmented" and task != "cws":
        raise ValueError("--output-format segmented is for word segmenters; use conll or json")
    if args.output != "-" and Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a directory")
    print(f"units: {units} (from {args.model})", file=sys.stderr)
    sep = " " if units == "words" else ""
    scheme = tagger.config.get("scheme") or "BIO"
    lines = _input_lines(args.input)
    tmp = None if args.output == "-" else Path(f"{args.output}.tmp{os.getpid()}")
    sink = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")  # noqa: SIM115
    bar = tqdm(unit=" sent", disable=True if args.no_progress else None, file=sys.stderr)
    warned = units != "words"
    try:
        sents = iter_sentences(lines, args.input_format, task, units, args.token_col)
        for chunk in _chunks(sents, args.chunk):
            if not warned:
                _warn_unsegmented(chunk[0], args.input)
                warned = True
            preds = tagger.predict(chunk, batch_size=args.batch_size)
            for c, p in zip(chunk, preds):
                sink.write(format_sentence(c, p, task, out_fmt, sep, scheme) + "\n")
            bar.update(len(chunk))
        if tmp is not None:
            sink.close()
            os.replace(tmp, args.output)
    finally:
        bar.close()
        if lines is not sys.stdin:
            lines.close()
        if tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)
    return 0
