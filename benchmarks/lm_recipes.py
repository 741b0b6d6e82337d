"""Pretraining recipes compared from their own checkpoints: held-out MLM accuracy and
perplexity on chinese-text valid, with the training tokens each had seen.

The runs are ``kexue lm pretrain`` directories (``trainer/checkpoints/step_*``); each arm names a
run directory, a step and a label. Every checkpoint is scored the same way
(:func:`kexue.lm.evaluate_mlm`: 128-character chunks from position 0, 15 % masked, fixed seed),
with the unigram baseline beside them.

An arm may also be a ``kexue lm export`` directory (its manifest gives the config and step;
the STEP argument is then ignored).

Usage::

    python benchmarks/lm_recipes.py --arm RUN_DIR STEP "label" [--arm ...] [--snapshot PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kexue.lm import PretrainConfig, evaluate_mlm
from kexue.lm.pretraining import chinese_texts, model_from_checkpoint, unigram_baseline
from kexue.report.bench import add_snapshot_option, run_recorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", nargs=3, action="append", metavar=("RUN", "STEP", "LABEL"),
                    required=True)  # fmt: skip
    ap.add_argument("--valid-texts", type=int, default=0, help="0: all of valid")
    add_snapshot_option(ap, "lm-recipes")
    args = ap.parse_args(argv)
    rows: list[dict] = []

    def body() -> None:
        train = chinese_texts("train")
        valid = chinese_texts("valid", args.valid_texts)
        uni = None
        print("**Pretraining recipes, each at the tokens its run reached** (held-out "
              f"= {len(valid)} chinese-text valid texts, 128-character chunks, 15% masked)\n")  # fmt: skip
        print("| recipe | step | training tokens | held-out MLM acc | perplexity |")
        print("|---|---:|---:|---:|---:|")
        for run, step, label in args.arm:
            run_dir = Path(run).expanduser()
            man = run_dir / "kexue_manifest.json"
            if (run_dir / "config.json").is_file() and man.is_file():  # a `lm export` directory
                from kexue.lm import load_pretrained

                info = json.loads(man.read_text())
                model, tok = load_pretrained(run_dir)
                cfg = PretrainConfig(**info["config"])
                step = str(info["pretraining"]["steps"])
            else:
                model, tok, cfg = model_from_checkpoint(run_dir, int(step))
            if uni is None:
                uni = unigram_baseline(tok, train, valid)
                print(f"| unigram baseline (no learning) | 0 | 0 | {uni['mlm_accuracy']:.3f} | "
                      f"{uni['perplexity']:.1f} |")  # fmt: skip
            ev = evaluate_mlm(model, tok, valid, max_len=128)
            tokens = int(step) * cfg.batch_size * cfg.max_len  # packed chunks: full but the last
            rows.append({"label": label, "run": str(run_dir), "step": int(step),
                         "tokens": tokens, "config": cfg.to_dict(), **ev})  # fmt: skip
            print(f"| {label} | {step} | {tokens / 1e6:.1f} M | {ev['mlm_accuracy']:.3f} | "
                  f"{ev['perplexity']:.1f} |", flush=True)  # fmt: skip
        rows.append({"label": "unigram", **(uni or {})})

    run_recorded(body, args.snapshot, name="lm-recipes", script=__file__, data=lambda: rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
