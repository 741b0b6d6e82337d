"""The model card of the shipped ``zh-char-bert``, rendered from its manifest (every number
there was computed by ``kexue lm export`` on the shipped fp16 weights).

Usage: ``python benchmarks/zh_char_bert.py [--snapshot docs/results/bench/zh-char-bert.json]``
"""

from __future__ import annotations

import argparse
import json
import sys

from kexue.core.io import DIR_MANIFEST
from kexue.lm import shipped_dir
from kexue.report.bench import add_snapshot_option, run_recorded


def card(man: dict) -> str:
    """The markdown card of manifest ``man``."""
    c, pre, ev = man["config"], man["pretraining"], man["eval"]
    size = sum(f["size"] for f in man["files"].values())
    lines = [
        f"**`{man['name']}`**: {man['format']}, {size / 2**20:.1f} MiB; "
        f"{c['num_layers']} layers x {c['hidden_size']}, {c['num_heads']} heads, vocabulary "
        f"{man['vocab_size']}; {pre['steps']} steps of batch {c['batch_size']} x {c['max_len']} "
        f"({pre['tokens'] / 1e6:.1f} M tokens) on {pre['corpus']}; "
        f"{pre['wall_seconds'] / 3600:.2f} h wall on {pre.get('threads') or '?'} CPU threads "
        f"(recipe: `kexue lm pretrain --preset {man['name']}`; {man.get('schedule', 'the whole schedule')})\n",
        "| held-out text | MLM accuracy | unigram baseline | perplexity | unigram perplexity "
        "| target (issue 31) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    targets = {"chinese_text_valid": 0.35, "cmrc2018_trial_passages": 0.30}
    names = {
        "chinese_text_valid": "chinese-text valid (in domain)",
        "cmrc2018_trial_passages": "CMRC 2018 trial passages (never seen: domain shift)",
    }
    for key, label in names.items():
        e = ev[key]
        met = "met" if e["mlm_accuracy"] >= targets[key] else "not met"
        lines.append(
            f"| {label} | {e['mlm_accuracy']:.3f} | {e['unigram']['mlm_accuracy']:.3f} | "
            f"{e['perplexity']:.1f} | {e['unigram']['perplexity']:.1f} | "
            f">= {targets[key]:.2f}: {met} |"
        )
    lines.append(
        "\n15% of the characters masked (all by `[MASK]`, fixed seed), chunks of 128; the "
        "unigram baseline answers the most frequent training character."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_snapshot_option(ap, "zh-char-bert")
    args = ap.parse_args(argv)
    man = json.loads((shipped_dir("zh-char-bert") / DIR_MANIFEST).read_text())

    def body() -> None:
        print(card(man))

    run_recorded(
        body,
        args.snapshot,
        name="zh-char-bert",
        script=__file__,
        data=lambda: {k: man[k] for k in ("name", "config", "pretraining", "eval", "check")},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
