"""Benchmark for kexue.lm: pretraining tokens/s of our MLM step against HF ``BertForMaskedLM``.

Same model (the ``zh-char-bert`` preset's shape: 4 layers x 256, vocabulary of chinese-text),
same batch (64 chunks of 128 tokens), same masks. HF's step is the documented one,
``model(input_ids, attention_mask, labels=labels).loss``: the vocabulary projection runs at every
position and the loss ignores the unmasked ones. Ours is :func:`kexue.lm.pretrain`'s: the encoder,
then the MLM head on the masked positions only (15 %). Both: forward, backward, AdamW step.
Interleaved rounds; the best and the median of ``--repeats`` steps each.

Usage: ``python benchmarks/lm.py [--repeats 12] [--threads 2] [--snapshot PATH]``.
Target (issue 31): >= 1.5x HF's tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from kexue.lm import PRESETS, build_mlm, encoder_and_head, mask_tokens
from kexue.lm.pretraining import _pad_batch, chinese_texts, pack_texts
from kexue.lm.tokenizer import build_tokenizer, encode_chars
from kexue.report.bench import add_snapshot_option, run_recorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=12, help="timed steps per side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--batch", type=int, default=64)
    add_snapshot_option(ap, "lm")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []

    def body() -> None:
        cfg = PRESETS["zh-char-bert"]
        texts = chinese_texts("train", 20000)
        tok = build_tokenizer(chinese_texts("train"), min_freq=cfg.min_freq)
        chunks = pack_texts([encode_chars(tok, t) for t in texts], cfg.max_len - 2)
        g = torch.Generator().manual_seed(0)
        batches = []
        for i in range(args.repeats + 2):
            part = chunks[i * args.batch : (i + 1) * args.batch]
            ids, valid = _pad_batch(part, tok.cls_token_id, tok.sep_token_id)
            special = ~valid | (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
            x, y = mask_tokens(
                ids, special=special, mask_id=tok.mask_token_id, vocab_size=len(tok),
                mask_prob=cfg.mask_prob, generator=g,
            )  # fmt: skip
            batches.append((x, valid, y))
        models = {}
        for name in ("HF BertForMaskedLM (labels=)", "kexue (head on masked only)"):
            torch.manual_seed(0)
            m = build_mlm(cfg, len(tok)).train()
            models[name] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4))

        def hf_step(m, x, valid, y):
            return m(input_ids=x, attention_mask=valid, labels=y).loss

        def our_step(m, x, valid, y):
            enc, head = encoder_and_head(m)
            sel = y != -100
            h = enc(input_ids=x, attention_mask=valid).last_hidden_state
            return torch.nn.functional.cross_entropy(head(h[sel]), y[sel])

        steps = dict(zip(models, (hf_step, our_step), strict=True))
        times: dict[str, list[float]] = {k: [] for k in models}
        losses: dict[str, list[float]] = {k: [] for k in models}
        for i, (x, valid, y) in enumerate(batches):
            for name, (m, opt) in models.items():  # interleaved: the same machine state
                t0 = time.perf_counter()
                loss = steps[name](m, x, valid, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                dt = time.perf_counter() - t0
                if i >= 2:  # two warm-up steps
                    times[name].append(dt)
                    losses[name].append(float(loss.detach()))
        tokens = float(batches[0][1].sum())
        print(
            f"**MLM pretraining step, tokens/s** (4 x 256 BERT, vocabulary {len(tok)}, batch "
            f"{args.batch} x {cfg.max_len}, 15% masked; {torch.get_num_threads()} threads; "
            f"{args.repeats} interleaved steps each)\n"
        )
        print("| step | best ms | median ms | tokens/s (best) | vs HF |")
        print("|---|---:|---:|---:|---:|")
        hf = min(times[next(iter(models))])
        for name, ts in times.items():
            best, med = min(ts), statistics.median(ts)
            rows.append({"step": name, "best_s": best, "median_s": med, "tokens": tokens,
                         "times_s": ts, "losses": losses[name]})  # fmt: skip
            print(
                f"| {name} | {best * 1e3:.0f} | {med * 1e3:.0f} | {tokens / best:,.0f} | "
                f"{hf / best:.2f}x |"
            )
        same = all(
            abs(a - b) < 1e-3 * max(1.0, abs(a)) for a, b in zip(*losses.values(), strict=True)
        )
        print(f"\nlosses equal step by step (same weights, same masks): {same}")

    run_recorded(body, args.snapshot, name="lm", script=__file__, data=lambda: rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
