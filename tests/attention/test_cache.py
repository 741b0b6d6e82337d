"""Bounded KV cache: cached decoding == recomputed (every pattern, 1,000+ steps), O(w) size.

Oracles: the full forward of the same module (blocked kernel, itself checked against the
brute-force loop in test_functional.py) and, for short runs, the dense probabilities of
``attention_oracles`` (which import nothing of kexue.attention).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attention_oracles import dense_probs, member

from kexue.attention import (
    BoundedKVCache,
    KVCache,
    MultiHeadSelfAttention,
    TransformerDecoderBlock,
)

CONFIGS = [
    {"pattern": "full"},
    {"pattern": "local", "window": 5},
    {"pattern": "local", "window": 0},
    {"pattern": "atrous", "rate": 3},
    {"pattern": "sparse", "rate": 4},
    {"pattern": "sparse", "rate": 3, "window": 6},
    {"pattern": "strided", "rate": 4},
    {"pattern": "fixed", "rate": 4, "summary": 2},
]


def _oracle_params(cfg):
    """The pattern's parameters in attention_oracles' names (rate is the stride of strided/fixed)."""
    kw = {k: v for k, v in cfg.items() if k != "pattern"}
    if cfg["pattern"] in ("strided", "fixed"):
        kw["stride"] = kw.pop("rate")
    return kw


def _decode(m, x, cache, prefill, chunk=1):
    """Prefill ``prefill`` tokens, then ``chunk`` tokens per call; the concatenated outputs."""
    outs = [m(x[:, :prefill], cache=cache)]
    for t in range(prefill, x.shape[1], chunk):
        outs.append(m(x[:, t : t + chunk], cache=cache))
    return torch.cat(outs, 1)


def _dense_reference(m, x, cfg):
    """Projections by hand, dense probabilities over S(i) from the oracle, output projection."""
    b, n, d = x.shape
    h = m.num_heads
    q, k, v = F.linear(x, m.qkv.weight, m.qkv.bias).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    p = dense_probs(q, k, cfg["pattern"], causal=True, **_oracle_params(cfg))
    o = (p @ v).transpose(1, 2).reshape(b, n, d)
    return F.linear(o, m.out_proj.weight, m.out_proj.bias)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("chunk", [1, 3])
def test_bounded_cache_equals_dense_oracle(cfg, chunk):
    torch.manual_seed(0)
    m = MultiHeadSelfAttention(8, 2, causal=True, **cfg).double().eval()
    x = torch.randn(2, 40, 8, dtype=torch.float64)
    want = _dense_reference(m, x, cfg)
    got = _decode(m, x, m.new_cache(), prefill=3, chunk=chunk)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    full_cache = _decode(m, x, KVCache(), prefill=3, chunk=chunk)
    torch.testing.assert_close(full_cache, want, atol=1e-10, rtol=0)


def _long_run(cfg, steps):
    torch.manual_seed(1)
    m = MultiHeadSelfAttention(4, 2, causal=True, **cfg).double().eval()
    x = torch.randn(1, steps, 4, dtype=torch.float64)
    with torch.no_grad():
        want = m(x)  # blocked kernel over the whole sequence
        cache = BoundedKVCache()
        got = _decode(m, x, cache, prefill=1)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    assert cache.length == steps


LONG = [pytest.param(c, marks=[] if c["pattern"] == "local" else pytest.mark.slow) for c in CONFIGS]


@pytest.mark.parametrize("cfg", LONG, ids=lambda c: "-".join(map(str, c.values())))
def test_bounded_cache_long_decoding_equals_recompute(cfg):
    """1,100 one-token steps (~5-15 s per pattern on a busy 2-core machine: local runs by
    default, the others are ``slow``; the 40-step dense-oracle test covers every pattern)."""
    _long_run(cfg, 1100)


def _stored_positions(cache):
    pos = [p[valid[0]] for _, _, valid, p in cache.parts()]
    return sorted(torch.cat(pos).tolist()) if pos else []


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_bounded_cache_keeps_what_later_queries_need(cfg):
    """After each step T the stored keys contain every j < T a query t' in [T, T + 40) attends
    (brute force over the pattern definition); local stores exactly the last w + 1 keys."""
    torch.manual_seed(0)
    m = MultiHeadSelfAttention(4, 2, causal=True, **cfg).eval()
    x = torch.randn(1, 60, 4)
    cache = m.new_cache()
    kw, kind = _oracle_params(cfg), cfg["pattern"]
    with torch.no_grad():
        m(x[:, :1], cache=cache)
        for t in range(1, 60):
            m(x[:, t : t + 1], cache=cache)
            seen = t + 1
            stored = set(_stored_positions(cache))
            assert len(stored) == cache.size
            need = {
                j
                for j in range(seen)
                for tq in range(seen, seen + 40)
                for head in range(2)
                if member(kind, tq, j, head=head, num_heads=2, causal=True, **kw)
            }
            assert need <= stored, (seen, sorted(need - stored))
            if kind == "local":
                assert cache.size == min(seen, cfg["window"] + 1)


def test_local_cache_size_constant_and_fixed_grows_with_summaries():
    torch.manual_seed(0)
    for cfg, n in (
        ({"pattern": "local", "window": 7}, 100),
        ({"pattern": "fixed", "rate": 8}, 100),
    ):
        m = MultiHeadSelfAttention(4, 2, causal=True, **cfg).eval()
        cache, sizes = m.new_cache(), []
        with torch.no_grad():
            for _ in range(n):
                m(torch.randn(1, 1, 4), cache=cache)
                sizes.append(cache.size)
        if cfg["pattern"] == "local":
            assert sizes[:8] == list(range(1, 9)) and set(sizes[8:]) == {8}
            assert cache.parts()[0][0].shape[2] == 8  # the ring: w + 1 slots, nothing else
            assert len(cache.parts()) == 1
        else:  # ring of l = 8 slots + one summary key per block that left the ring
            assert sizes[-1] == 8 + (n - 8) // 8


def test_bounded_cache_reorder_and_block_cache():
    """Beam-search reorder: continuing after ``reorder`` equals recomputing the chosen rows."""
    torch.manual_seed(0)
    blk = TransformerDecoderBlock(8, 2, ffn_dim=16, pattern="local", window=4).double().eval()
    x = torch.randn(2, 30, 8, dtype=torch.float64)
    mem = torch.randn(2, 5, 8, dtype=torch.float64)
    cache = blk.new_cache()
    assert isinstance(cache.self_attn, BoundedKVCache)
    outs = [blk(x[:, :1], mem, cache=cache)]
    outs += [blk(x[:, t : t + 1], None, cache=cache) for t in range(1, 20)]
    idx = torch.tensor([1, 1])
    cache.reorder(idx)
    xr = x[idx]
    outs = [o[idx] for o in outs] + [
        blk(xr[:, t : t + 1], None, cache=cache) for t in range(20, 30)
    ]
    torch.testing.assert_close(torch.cat(outs, 1), blk(xr, mem[idx]), atol=1e-10, rtol=0)
    assert not isinstance(blk.new_cache(bounded=False).self_attn, BoundedKVCache)


def test_prefill_padding_and_errors():
    torch.manual_seed(0)
    m = MultiHeadSelfAttention(8, 2, causal=True, pattern="local", window=3).double().eval()
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    kpm = torch.ones(2, 12, dtype=torch.bool)
    kpm[1, 1:3] = False  # invalid keys inside the prefill
    want = m(x, kpm)
    cache = m.new_cache()
    outs = [m(x[:, :4], kpm[:, :4], cache=cache)]
    outs += [m(x[:, t : t + 1], cache=cache) for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(outs, 1), want, atol=1e-10, rtol=0)
    other = MultiHeadSelfAttention(8, 2, causal=True, pattern="local", window=5).double()
    with pytest.raises(ValueError, match="window"):
        other(x[:, 4:5], cache=cache)
