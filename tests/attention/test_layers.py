"""Modules: drop-in for nn.MultiheadAttention, patterns through modules, cached == recomputed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kexue.attention import (
    DecoderCache,
    KVCache,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

CONFIGS = [
    {"pattern": "full"},
    {"pattern": "local", "window": 3},
    {"pattern": "atrous", "rate": 3},
    {"pattern": "sparse", "rate": 3},
    {"pattern": "strided", "rate": 4},
    {"pattern": "fixed", "rate": 4, "summary": 2},
]


def test_full_matches_nn_multihead_attention():
    torch.manual_seed(0)
    d, h = 16, 4
    ours = MultiHeadSelfAttention(d, h).double()
    ref = nn.MultiheadAttention(d, h, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(3, 10, d, dtype=torch.float64)
    kpm = torch.arange(10)[None] < torch.tensor([10, 7, 3])[:, None]
    want, _ = ref(x, x, x, key_padding_mask=~kpm, need_weights=False)
    torch.testing.assert_close(ours(x, kpm), want, atol=1e-10, rtol=0)
    causal = torch.ones(10, 10, dtype=torch.bool).triu(1)
    want, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
    ours.causal = True
    torch.testing.assert_close(ours(x), want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_self_attention_kv_cache_equals_recompute(cfg):
    torch.manual_seed(0)
    m = MultiHeadSelfAttention(16, 4, causal=True, **cfg).double().eval()
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    full = m(x)
    cache = KVCache()
    steps = [m(x[:, :5], cache=cache)]  # prefill (blocked kernel), then one token at a time
    steps += [m(x[:, t : t + 1], cache=cache) for t in range(5, 13)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-10, rtol=0)
    assert cache.length == 13


@pytest.mark.parametrize("cfg", CONFIGS)
def test_decoder_block_cached_decoding_equals_full(cfg):
    torch.manual_seed(0)
    blk = TransformerDecoderBlock(16, 4, ffn_dim=32, **cfg).double().eval()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    mem = torch.randn(2, 6, 16, dtype=torch.float64)
    mpm = torch.arange(6)[None] < torch.tensor([6, 4])[:, None]
    full = blk(x, mem, memory_padding_mask=mpm)
    cache = DecoderCache()
    outs = [blk(x[:, :1], mem, memory_padding_mask=mpm, cache=cache)]
    outs += [blk(x[:, t : t + 1], None, cache=cache) for t in range(1, 11)]
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-10, rtol=0)
    cache.reorder(torch.tensor([1, 1]))
    assert cache.self_attn.k.shape[0] == 2 and cache.length == 11


def test_decoder_only_block_and_causality():
    torch.manual_seed(0)
    blk = TransformerDecoderBlock(8, 2, pattern="sparse", rate=4, cross_attention=False).eval()
    x = torch.randn(1, 20, 8)
    y = blk(x)
    x2 = x.clone()
    x2[:, 12] += 1
    torch.testing.assert_close(blk(x2)[:, :12], y[:, :12])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_encoder_block_patterns_and_padding(cfg):
    torch.manual_seed(0)
    blk = TransformerEncoderBlock(16, 4, dropout=0.1, **cfg)
    x = torch.randn(2, 19, 16)
    kpm = torch.arange(19)[None] < torch.tensor([19, 8])[:, None]
    y = blk(x, kpm)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in blk.parameters())
    blk.eval()
    short = blk(x[1:, :8])
    torch.testing.assert_close(blk(x, kpm)[1:, :8], short, atol=1e-5, rtol=0)


def test_cross_attention_cache_and_errors():
    torch.manual_seed(0)
    ca = MultiHeadCrossAttention(8, 2, memory_dim=12)
    x, mem = torch.randn(2, 3, 8), torch.randn(2, 5, 12)
    cache = KVCache()
    a = ca(x, mem, cache=cache)
    torch.testing.assert_close(ca(x, None, cache=cache), a)
    with pytest.raises(ValueError, match="memory is required"):
        ca(x, None)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(10, 3)
    with pytest.raises(ValueError, match="pattern"):
        MultiHeadSelfAttention(8, 2, pattern="dilated")
    with pytest.raises(ValueError, match="causal"):
        MultiHeadSelfAttention(8, 2)(torch.randn(1, 3, 8), cache=KVCache())
    with pytest.raises(ValueError, match="x must have shape"):
        MultiHeadSelfAttention(8, 2)(torch.randn(1, 3, 7))
