"""Decoding with a bounded vs a full KV cache (issue 15): tokens/s and peak memory, one run.

A 2-layer causal local(w) LM (token embedding, pre-norm ``TransformerDecoderBlock`` s without
cross-attention, final LayerNorm, output tied to the embedding; random weights: the speed and
memory of decoding do not depend on what was learned) generates ``--tokens`` tokens greedily
from a one-token prompt, once with ``BoundedKVCache`` (a ring of w + 1 keys per layer) and once
with the full ``KVCache`` (every key). Both must produce the same tokens; the table says so.

Columns: wall and CPU seconds of the whole generation (``kexue.core.timing.time_calls``, one
call each), tokens/s, the cache's own bytes at the end (exact: the tensors it holds), and the
peak extra resident memory of a second generation (``kexue.core.timing.peak_extra_mib``;
contention does not change it). Ratios are full / bounded from this one run.

Usage: ``python benchmarks/attention_decode.py [--tokens 16384] [--window 64] [--dim 128]
[--heads 4] [--threads 1] [--snapshot PATH]``. Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch
from torch import nn

from kexue.attention import TransformerDecoderBlock
from kexue.core.timing import peak_extra_mib, time_calls
from kexue.report.bench import add_snapshot_option, command_line, write_snapshot


class LocalLM(nn.Module):
    """Embedding -> ``layers`` causal local(``window``) decoder blocks -> LayerNorm -> tied logits."""

    def __init__(self, vocab: int, dim: int, heads: int, layers: int, window: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(
            TransformerDecoderBlock(
                dim, heads, pattern="local", window=window, cross_attention=False
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    @torch.no_grad()
    def generate(self, first: torch.Tensor, steps: int, *, bounded: bool):
        """Greedy decoding of ``steps`` tokens after ``first (b, 1)``; returns the ``(b, steps)``
        tokens and the per-layer caches."""
        caches = [blk.new_cache(bounded=bounded) for blk in self.blocks]
        tok, out = first, []
        for _ in range(steps):
            h = self.embed(tok)
            for blk, c in zip(self.blocks, caches, strict=True):
                h = blk(h, cache=c)
            tok = (self.norm(h[:, -1]) @ self.embed.weight.T).argmax(-1, keepdim=True)
            out.append(tok)
        return torch.cat(out, 1), caches


def cache_bytes(caches) -> int:
    """Bytes of every tensor the caches hold (keys, values, masks, positions)."""
    total = 0
    for c in caches:
        for k, v, valid, pos in c.self_attn.parts():
            total += sum(x.numel() * x.element_size() for x in (k, v, valid, pos))
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    add_snapshot_option(p, "attention-decode")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = LocalLM(args.vocab, args.dim, args.heads, 2, args.window).eval()
    first = torch.zeros(1, 1, dtype=torch.long)
    rows = {}
    for bounded in (True, False):  # timings first: peak_extra_mib changes malloc settings
        res = {}

        def run(bounded=bounded, res=res):
            res["tokens"], res["caches"] = lm.generate(first, args.tokens, bounded=bounded)

        t = time_calls(run, warmup=0, repeats=1)
        rows[bounded] = {
            "wall": t.best, "cpu": t.best_cpu, "tokens": res["tokens"],
            "cache_mib": cache_bytes(res["caches"]) / 2**20,
        }  # fmt: skip
        print(f"{'bounded' if bounded else 'full'}: {t.best:.1f} s", flush=True)
    for bounded in (True, False):
        rows[bounded]["peak"] = peak_extra_mib(
            lambda bounded=bounded: lm.generate(first, args.tokens, bounded=bounded)
        )
    b, f = rows[True], rows[False]
    out = [
        f"2-layer local({args.window}) LM, d={args.dim}, h={args.heads}, {args.tokens} tokens, "
        "batch 1, fp32",
        "",
        "| cache | wall s | CPU s | tokens/s | cache MiB at end | peak extra MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("BoundedKVCache (ring of w + 1)", b), ("KVCache (every key)", f)):
        peak = "n/a" if r["peak"] is None else f"{r['peak']:.1f}"
        out.append(
            f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {args.tokens / r['wall']:.0f} | "
            f"{r['cache_mib']:.3f} | {peak} |"
        )
    same = bool(torch.equal(b["tokens"], f["tokens"]))
    out += [
        "",
        f"full / bounded: time {f['wall'] / b['wall']:.2f}x, cache memory "
        f"{f['cache_mib'] / b['cache_mib']:.0f}x"
        + (f", peak {f['peak'] / max(b['peak'], 1e-9):.1f}x" if b["peak"] is not None else "")
        + f"; same tokens: {same}",
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntorch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s), "
          f"load avg {load:.1f}\n")  # fmt: skip
    print("\n".join(out))
    if args.snapshot:
        data = {name: {k: v for k, v in r.items() if k != "tokens"} | {"tokens_per_s":
                args.tokens / r["wall"]} for name, r in (("bounded", b), ("full", f))}  # fmt: skip
        write_snapshot(
            args.snapshot, name="attention-decode",
            command=command_line("benchmarks/attention_decode.py", sys.argv[1:]),
            markdown="\n".join(out), data=data | {"same_tokens": same},
        )  # fmt: skip
        print(f"snapshot: {args.snapshot}")


if __name__ == "__main__":
    main()
