"""Pretraining recipe ablation at equal CPU time: which Cramming changes help a tiny BERT on CPU.

Every arm trains from the same seed on ``chinese-text`` train for the same budget of *process
CPU seconds* (``time.process_time``: all threads counted, so a busy machine does not favour an
arm), with a one-cycle learning rate driven by the spent fraction of that budget (Cramming's
budget schedule: linear warm-up over the first ``warmup`` of it, then linear decay to 0). Then
held-out MLM accuracy and perplexity on ``chinese-text`` valid, with the fixed masking of
:func:`kexue.lm.evaluate_mlm`, beside the unigram baseline (always the most frequent character).

Arms (each changes one thing from the line above it, except where it says "from"):

- ``today``: the recipe before this ablation: post-LN BERT, dropout 0.1, peak lr 5e-4, clip 1.0;
- ``lr 1e-3, clip 0.5``;
- ``no dropout``;
- ``sinusoidal position init`` (from ``no dropout``; still a plain ``BertForMaskedLM``);
- ``pre-LN`` (from ``no dropout``; HF ``RobertaPreLayerNorm``);
- ``no biases`` (from ``no dropout``; no HF class loads it);
- ``mask 30%`` (from ``no dropout``);
- ``batch 64`` (from ``no dropout``; twice the batch, half the steps).

The arms use a proxy of the shipped shape (4 layers, 128 wide, batch 32) so that a few CPU
minutes are hundreds of steps.

Usage: ``python benchmarks/lm_ablation.py [--minutes 4] [--snapshot docs/results/bench/lm-ablation.json]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from kexue.lm.pretraining import (
    PretrainConfig,
    _pad_batch,
    build_mlm,
    chinese_texts,
    encoder_and_head,
    evaluate_mlm,
    mask_tokens,
    pack_texts,
    unigram_baseline,
)
from kexue.lm.tokenizer import build_tokenizer, encode_chars
from kexue.report.bench import add_snapshot_option, run_recorded

# a proxy of the shipped shape (4 layers, but 128 wide and batch 32) so that a few CPU minutes
# are hundreds of steps: the recipe, not the size, is what this table compares
BASE = PretrainConfig(hidden_size=128, num_layers=4, num_heads=4, batch_size=32)


def arms() -> list[tuple[str, PretrainConfig]]:
    """The ablation arms, in table order."""
    today = dataclasses.replace(BASE, dropout=0.1, lr=5e-4, grad_clip=1.0)
    lr = dataclasses.replace(today, lr=1e-3, grad_clip=0.5)
    nodrop = dataclasses.replace(lr, dropout=0.0)
    return [
        ("today (post-LN, dropout 0.1, lr 5e-4, clip 1)", today),
        ("+ lr 1e-3, clip 0.5", lr),
        ("+ no dropout", nodrop),
        (
            "no dropout + sinusoidal position init",
            dataclasses.replace(nodrop, pos_init="sinusoidal"),
        ),
        ("no dropout + pre-LN", dataclasses.replace(nodrop, arch="prelayernorm")),
        ("no dropout + no biases", dataclasses.replace(nodrop, bias=False)),
        ("no dropout + mask 30%", dataclasses.replace(nodrop, mask_prob=0.3)),
        ("no dropout + batch 64", dataclasses.replace(nodrop, batch_size=64)),
    ]


def train_arm(
    cfg: PretrainConfig,
    tokenizer,
    chunks: list[list[int]],
    budget_s: float,
    warmup: float = 0.05,
) -> dict:
    """Train one arm for ``budget_s`` process-CPU seconds; returns steps, tokens and the model."""
    torch.manual_seed(cfg.seed)
    model = build_mlm(cfg, len(tokenizer))
    model.train()
    enc, head = encoder_and_head(model)
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in named if not n.endswith(no_decay)],
                "weight_decay": cfg.weight_decay,
            },
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    g = torch.Generator().manual_seed(cfg.seed)
    cls_id, sep_id, mask_id = (
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    )
    v = len(tokenizer)
    t0 = time.process_time()
    steps, tokens, losses = 0, 0, []
    while True:
        frac = (time.process_time() - t0) / budget_s
        if frac >= 1:
            break
        lr_scale = frac / warmup if frac < warmup else (1 - frac) / (1 - warmup)
        for grp in opt.param_groups:
            grp["lr"] = cfg.lr * max(lr_scale, 1e-3)
        idx = torch.randint(len(chunks), (cfg.batch_size,), generator=g).tolist()
        ids, valid = _pad_batch([chunks[i] for i in idx], cls_id, sep_id)
        special = ~valid | (ids == cls_id) | (ids == sep_id)
        inputs, labels = mask_tokens(
            ids,
            special=special,
            mask_id=mask_id,
            vocab_size=v,
            mask_prob=cfg.mask_prob,
            generator=g,
        )
        sel = labels != -100
        h = enc(input_ids=inputs, attention_mask=valid).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(h[sel]), labels[sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        steps += 1
        tokens += int(valid.sum())
        losses.append(float(loss.detach()))
    cpu = time.process_time() - t0
    return {"model": model, "steps": steps, "tokens": tokens, "cpu_s": cpu, "last_loss": losses[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="process CPU minutes per arm")
    ap.add_argument("--valid-texts", type=int, default=600, help="held-out texts scored")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="arm indices to run")
    add_snapshot_option(ap, "lm-ablation")
    args = ap.parse_args(argv)

    rows: list[dict] = []

    def body() -> list[dict]:
        train = chinese_texts("train")
        valid = chinese_texts("valid", args.valid_texts)
        tok = build_tokenizer(train, min_freq=BASE.min_freq)
        chunks = pack_texts([encode_chars(tok, t) for t in train], BASE.max_len - 2)
        uni = unigram_baseline(tok, train, valid)["mlm_accuracy"]
        budget = args.minutes * 60
        print(
            f"**Pretraining ablation at equal CPU time** ({args.minutes:g} process-CPU min per "
            f"arm, {torch.get_num_threads()} thread(s); proxy BERT {BASE.num_layers} layers x "
            f"{BASE.hidden_size}, batch {BASE.batch_size}, seq {BASE.max_len}; "
            f"held-out = {len(valid)} chinese-text valid texts, 15% masked, fixed seed)\n"
        )
        print("| arm | steps | tokens | held-out MLM acc | perplexity |")
        print("|---|---:|---:|---:|---:|")
        print(f"| unigram baseline (no learning) | 0 | 0 | {uni:.3f} | |")
        for i, (name, cfg) in enumerate(arms()):
            if args.only is not None and i not in args.only:
                continue
            r = train_arm(cfg, tok, chunks, budget)
            ev = evaluate_mlm(r["model"], tok, valid, max_len=cfg.max_len)
            row = {
                "arm": name,
                "config": cfg.to_dict(),
                "steps": r["steps"],
                "tokens": r["tokens"],
                "cpu_s": r["cpu_s"],
                "last_train_loss": r["last_loss"],
                "mlm_accuracy": ev["mlm_accuracy"],
                "perplexity": ev["perplexity"],
            }
            rows.append(row)
            print(
                f"| {name} | {r['steps']} | {r['tokens']:,} | {ev['mlm_accuracy']:.3f} | "
                f"{ev['perplexity']:.1f} |",
                flush=True,
            )
        rows.append({"arm": "unigram", "mlm_accuracy": uni})
        best = max((r for r in rows if "steps" in r), key=lambda r: r["mlm_accuracy"])
        print(
            f"\nbest arm: {best['arm']} ({best['mlm_accuracy']:.3f}); one seed per arm, so "
            "differences under ~0.01 are within noise."
        )
        return rows

    run_recorded(body, args.snapshot, name="lm-ablation", script=__file__, data=lambda: rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
