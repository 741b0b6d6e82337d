"""Benchmark for kexue.seq2seq (issue 12): generation throughput vs HuggingFace BART ``generate``.

One run, side by side, float32 on CPU, ``torch.no_grad``: a randomly initialised
``BartForConditionalGeneration`` and our ``Seq2Seq`` of the same size (width, heads, FFN, layers,
vocabulary; both tie input/output embeddings), batch 16, source length 128, exactly 64 generated
tokens per row (EOS banned before; ours: 63 tokens + EOS, 64 decoder steps as HF). Each cell is the
minimum over interleaved repeats (other jobs only ever add time). Also: bidirectional beam search
cost vs unidirectional at the same size, and the peak extra memory of greedy decoding at growing
output lengths (it should grow linearly: the KV cache).

Usage: ``python benchmarks/seq2seq.py [--small] [--repeats 3] [--threads 2]``.
Targets (issue 12): beam-4 >= 1.5x HF, greedy >= 1.2x HF, bidirectional <= 2.2x unidirectional.
"""

from __future__ import annotations

import argparse

import torch

from kexue.core.timing import peak_extra_mib, time_calls
from kexue.report.bench import add_snapshot_option, run_recorded
from kexue.seq2seq import (
    BidirectionalSeq2Seq,
    Seq2Seq,
    Seq2SeqConfig,
    beam_search,
    bidirectional_beam_search,
)


def hf_bart(v: int, d: int, heads: int, layers: int, ffn: int):
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(
        vocab_size=v, d_model=d, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn, max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
        eos_token_id=3, decoder_start_token_id=2, forced_bos_token_id=None,
        forced_eos_token_id=None, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        scale_embedding=True,
    )  # fmt: skip
    return BartForConditionalGeneration(cfg).eval()


def best_s(fns: dict, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(time_calls(fn, warmup=0, repeats=1).best)
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--small", action="store_true", help="tiny sizes: a seconds-long plumbing check"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    add_snapshot_option(ap, "seq2seq")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_recorded(
        lambda: _run(args), args.snapshot, name="seq2seq", script="benchmarks/seq2seq.py", argv=None
    )


def _run(args: argparse.Namespace) -> None:
    if args.small:
        v, d, heads, layers, ffn, b, s, n = 500, 64, 2, 1, 256, 4, 32, 16
    else:
        v, d, heads, layers, ffn, b, s, n = 5000, 256, 4, 3, 1024, 16, 128, 64
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=v, embed_dim=d, num_heads=heads, encoder_layers=layers,
                        decoder_layers=layers, ffn_dim=ffn, dropout=0.0)  # fmt: skip
    ours, bi, hf = (
        Seq2Seq(cfg).eval(),
        BidirectionalSeq2Seq(cfg).eval(),
        hf_bart(v, d, heads, layers, ffn),
    )
    src = torch.randint(4, v, (b, s))
    mask = torch.ones_like(src, dtype=torch.bool)
    n_params = {
        k: sum(p.numel() for p in m.parameters())
        for k, m in (("ours", ours), ("bart", hf), ("bi", bi))
    }

    def hf_gen(beams: int):
        return lambda: hf.generate(input_ids=src, attention_mask=mask, num_beams=beams, do_sample=False,
                                   max_new_tokens=n, min_new_tokens=n, early_stopping=False,
                                   length_penalty=1.0, num_return_sequences=1)  # fmt: skip

    def our_gen(beams: int):
        return lambda: beam_search(ours, src, beam_size=beams, max_len=n - 1, min_len=n - 1)

    def bi_gen(beams: int):
        return lambda: bidirectional_beam_search(
            bi, src, beam_size=beams, max_len=n - 1, min_len=n - 1
        )

    with torch.no_grad():
        out = hf_gen(1)()
        assert out.shape[1] - 1 == n, out.shape  # decoder start token + n new tokens
        assert (
            (beam_search(ours, src, beam_size=1, max_len=n - 1, min_len=n - 1)[0] >= 0)
            .sum(-1)
            .eq(n - 1)
            .all()
        )
        t = best_s({"hf1": hf_gen(1), "ours1": our_gen(1), "hf4": hf_gen(4), "ours4": our_gen(4),
                    "bi4": bi_gen(4), "bi1": bi_gen(1)}, args.repeats)  # fmt: skip
        mem = {m: peak_extra_mib(lambda m=m: beam_search(ours, src, beam_size=1, max_len=m - 1, min_len=m - 1))
               for m in (n // 2, n, 2 * n)}  # fmt: skip
    tps = {k: b * n / sec for k, sec in t.items()}
    print(
        f"**kexue.seq2seq generation, b={b}, source {s}, {n} new tokens, fp32, {args.threads} threads**\n"
    )
    print(f"Parameters: ours {n_params['ours'] / 1e6:.2f}M, BART {n_params['bart'] / 1e6:.2f}M, "
          f"bidirectional {n_params['bi'] / 1e6:.2f}M (d={d}, {layers}+{layers} layers, V={v})\n")  # fmt: skip
    print("| decoding | HF BART generate tok/s | kexue tok/s | kexue vs HF |")
    print("|---|---:|---:|---:|")
    for beams, key in ((1, "1"), (4, "4")):
        name = "greedy" if beams == 1 else "beam 4"
        print(
            f"| {name} | {tps['hf' + key]:.0f} | {tps['ours' + key]:.0f} | {t['hf' + key] / t['ours' + key]:.2f}x |"
        )
    print(f"\nBidirectional beam search (Su's, B=4) {tps['bi4']:.0f} tok/s: "
          f"{t['bi4'] / t['ours4']:.2f}x the time of unidirectional beam 4; greedy bidirectional "
          f"{t['bi1'] / t['ours1']:.2f}x greedy.")  # fmt: skip
    if all(x is not None for x in mem.values()):
        lens = sorted(mem)
        print(
            "\nPeak extra memory of greedy decoding (MiB): "
            + ", ".join(f"{m} tokens {mem[m]:.1f}" for m in lens)
        )


if __name__ == "__main__":
    main()
