"""Benchmark for kexue.mrc (issue 10): questions/s of the MLM, AR and span readers.

Same BERT, same answer cap ``L``, same passage windows, CMRC 2018 trial questions; batch size =
passage windows per forward pass (1 and 32). The MLM reader runs one forward pass per window; the
AR reader encodes the prefix once and then one position per generated token (key/value cache);
the span reader runs one forward pass and a banded span search.

An untrained BERT stops at arbitrary points, so AR is timed twice: as it is (stops at its first
``[SEP]``; the mean number of decode steps is printed) and with ``[SEP]`` suppressed, i.e. the
full ``L`` steps (the worst case; a trained reader's answers are mostly a few characters).
Pass ``--model DIR`` (``kexue lm pretrain`` output) to time a pretrained BERT instead.

Usage: ``python benchmarks/mrc.py [--small] [--model DIR] [--questions N] [--threads 2]``.
Targets (issue 10): MLM >= 5x AR at batch 32; MLM within 1.3x of the span reader.
Timings are the best of ``--repeats`` runs over the question set; run on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import torch

from kexue import data
from kexue.lm import build_tokenizer, load_pretrained, tiny_bert_config
from kexue.mrc import ARReader, MLMReader, SpanReader
from kexue.report.bench import add_snapshot_option, run_recorded


@contextlib.contextmanager
def sep_suppressed(model: torch.nn.Module, sep_id: int) -> Iterator[None]:
    """Make ``[SEP]`` (almost) never the argmax: AR then decodes all ``L`` steps."""
    bias = (
        model.cls.predictions.decoder.bias
        if model.cls.predictions.decoder.bias is not None
        else model.cls.predictions.bias
    )
    old = float(bias.data[sep_id])
    bias.data[sep_id] = -1e4
    try:
        yield
    finally:
        bias.data[sep_id] = old


def qps(reader, queries, batch: int, repeats: int) -> float:
    reader.predict_batch(queries[:2], batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        reader.predict_batch(queries, batch)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="16 questions, L=16, 128-token windows")
    ap.add_argument("--model", help="pretrained BERT directory (default: an untrained tiny BERT)")
    ap.add_argument("--questions", type=int, default=0, help="default 128 (--small: 16)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    add_snapshot_option(ap, "mrc")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_recorded(
        lambda: _run(args), args.snapshot, name="mrc", script="benchmarks/mrc.py", argv=None
    )


def _run(args: argparse.Namespace) -> None:
    L, q_len, p_len = (16, 32, 128) if args.small else (32, 64, 256)
    n = args.questions or (16 if args.small else 128)
    records = data.load("cmrc2018", "trial")[:n]
    queries = [(r["question"], [r["context"]]) for r in records]
    if args.model:
        mlm, tok = load_pretrained(args.model)
    else:
        from transformers import BertForMaskedLM

        tok = build_tokenizer([r["context"] + r["question"] for r in records])
        torch.manual_seed(0)
        mlm = BertForMaskedLM(
            tiny_bert_config(len(tok), hidden_size=args.hidden, num_layers=args.layers, num_heads=4)
        ).eval()
    from transformers import BertForQuestionAnswering

    span_model = BertForQuestionAnswering(mlm.config).eval()
    span_model.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    kw = {"max_answer_len": L, "max_question_len": q_len, "max_passage_len": p_len}
    readers = {
        "MLM (one pass)": MLMReader(mlm, tok, **kw),
        "AR (UniLM, KV cache)": ARReader(mlm, tok, **kw),
        "span (start/end)": SpanReader(span_model, tok, **kw),
    }
    windows = sum(len(readers["MLM (one pass)"].encode(q, p[0])) for q, p in queries)
    print(
        f"{n} CMRC trial questions, {windows} windows of <= {p_len} tokens, L = {L}, "
        f"BERT {mlm.config.num_hidden_layers} x {mlm.config.hidden_size}, "
        f"{torch.get_num_threads()} threads\n"
    )
    rows = {}
    with torch.no_grad():
        for name, r in readers.items():
            rows[name] = [qps(r, queries, b, args.repeats) for b in (1, 32)]
        with sep_suppressed(mlm, tok.sep_token_id):
            rows[f"AR, full {L} steps"] = [
                qps(readers["AR (UniLM, KV cache)"], queries, b, args.repeats) for b in (1, 32)
            ]
    mlm_row = rows["MLM (one pass)"]
    print("| reader | q/s batch 1 | q/s batch 32 | MLM speed-up at 32 |")
    print("|---|---:|---:|---:|")
    for name, (a, b) in rows.items():
        print(f"| {name} | {a:.1f} | {b:.1f} | {mlm_row[1] / b:.2f}x |")


if __name__ == "__main__":
    main()
