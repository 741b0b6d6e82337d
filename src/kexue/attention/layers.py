r"""Multi-head attention modules over any sparse pattern, with a KV cache for causal decoding.

.. math::

    \mathrm{MHA}(X) = \big[\mathrm{Attn}_S(XW_q^{(1)}, XW_k^{(1)}, XW_v^{(1)});\dots;
    \mathrm{Attn}_S(XW_q^{(h)}, XW_k^{(h)}, XW_v^{(h)})\big]\,W_o ,

with :math:`\mathrm{Attn}_S` the pattern-restricted attention of :mod:`kexue.attention.functional`
(Su Jianlin, 《为节约而生：从标准Attention到稀疏Attention》, 2019). Deviation from Su's Keras layers:
we keep the output projection :math:`W_o` and optional biases, as ``nn.MultiheadAttention``
does; Su's layers have neither. Not a drop-in for ``nn.MultiheadAttention``: the modules are
batch-first, take one input (self-attention) and return one tensor, and ``key_padding_mask`` is
True = valid token, the opposite of torch's (pass ``~torch_mask``).

Incremental decoding: with a cache (:mod:`kexue.attention.cache`), the new tokens (positions
``t0 .. t0 + t - 1``) attend the cached keys plus themselves under the causal pattern. A first
call on an empty cache uses the blocked kernel; later calls score the new queries against the
cached keys with a dense row mask of the pattern built from the keys' positions (cheap for a few
new tokens). :class:`KVCache` keeps every key; :class:`BoundedKVCache` keeps only the keys a later
query can attend (a ring of ``w + 1`` keys for local(w): O(w) memory and time per token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kexue.attention.cache import BoundedKVCache, KVCache, Part
from kexue.attention.functional import attention, full_attention
from kexue.attention.patterns import KINDS, allowed, decode_retention, head_parts, resolve_params
from kexue.core.checks import check_positive_int, check_shape


def _check_dims(embed_dim: int, num_heads: int, dropout: float) -> None:
    check_positive_int(embed_dim, "embed_dim")
    check_positive_int(num_heads, "num_heads")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class MultiHeadSelfAttention(nn.Module):
    """Batch-first multi-head self-attention with a sparse pattern.

    Args:
        embed_dim: model width ``d``.
        num_heads: heads ``h`` (``e = d / h``).
        pattern: ``full``, ``atrous``, ``local``, ``sparse``, ``strided`` or ``fixed``.
        rate: atrous/sparse rate; the stride ``l`` of strided/fixed.
        window: local half-width; sparse's local part (default ``rate - 1``).
        summary: fixed pattern's summary size ``c``.
        causal: position ``i`` attends only ``j <= i`` (required for the KV cache).
        dropout: dropout on attention probabilities.
        bias: biases in the q/k/v/output projections.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        pattern: str = "full",
        rate: int | None = None,
        window: int | None = None,
        summary: int = 1,
        causal: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_dims(embed_dim, num_heads, dropout)
        if pattern not in KINDS:
            raise ValueError(f"pattern must be one of {KINDS}, got {pattern!r}")
        if pattern in ("strided", "fixed"):
            self.params = resolve_params(pattern, stride=rate, summary=summary)
        else:
            self.params = resolve_params(pattern, rate=rate, window=window)
        self.embed_dim, self.num_heads, self.pattern = embed_dim, num_heads, pattern
        self.causal, self.dropout = causal, dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def extra_repr(self) -> str:
        ps = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"{self.embed_dim}, heads={self.num_heads}, {self.pattern}({ps}), causal={self.causal}"
        )

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(b, n, d)``; with a cache, the ``n`` new tokens.
            key_padding_mask: ``(b, n)`` bool, True = valid token (of the new tokens); the
                opposite of ``nn.MultiheadAttention``'s ``key_padding_mask`` (True = ignore).
            cache: :class:`KVCache` updated in place (causal only).

        Returns:
            ``(b, n, d)``.
        """
        sizes = check_shape(x, "x", ("b", "n", self.embed_dim))
        if key_padding_mask is not None:
            check_shape(key_padding_mask, "key_padding_mask", ("b", "n"), sizes)
        q, k, v = rearrange(
            self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.num_heads
        )
        p = self.dropout if self.training else 0.0
        if cache is None:
            o = self._full(q, k, v, key_padding_mask, p)
        else:
            o = self._cached(q, k, v, key_padding_mask, cache, p)
        return self.out_proj(rearrange(o, "b h n e -> b n (h e)"))

    def new_cache(self, *, bounded: bool = True) -> KVCache | BoundedKVCache:
        """An empty cache for this layer: :class:`BoundedKVCache` (only the keys a later query
        can attend) or, with ``bounded=False``, :class:`KVCache` (every key)."""
        return BoundedKVCache() if bounded else KVCache()

    def _full(self, q, k, v, key_padding_mask, p: float) -> torch.Tensor:
        return attention(
            q, k, v, self.pattern, causal=self.causal, key_padding_mask=key_padding_mask,
            dropout_p=p, **self.params,
        )  # fmt: skip

    def _cached(self, q, k, v, key_padding_mask, cache, p: float) -> torch.Tensor:
        """Prefill with the blocked kernel on an empty cache; then attend the cached keys."""
        if not self.causal:
            raise ValueError("a KV cache needs causal=True")
        t0, t = cache.length, q.shape[2]
        mask = key_padding_mask
        if mask is None:
            mask = torch.ones(q.shape[0], t, dtype=torch.bool, device=q.device)
        retention = decode_retention(self.pattern, **self.params)
        if t0 == 0:
            cache.push(k, v, mask, retention)
            return self._full(q, k, v, key_padding_mask, p)
        if cache.keeps_all:  # every key stays: push all new keys, answer all queries at once
            cache.push(k, v, mask, retention)
            return self._attend_parts(q, t0, cache.parts(), p)
        outs = []  # the cache may drop keys: one token at a time, each sees what it needs
        for i in range(t):
            sl = slice(i, i + 1)
            cache.push(k[:, :, sl], v[:, :, sl], mask[:, sl], retention)
            outs.append(self._attend_parts(q[:, :, sl], t0 + i, cache.parts(), p))
        return torch.cat(outs, 2)

    def _attend_parts(self, q: torch.Tensor, t0: int, parts: list[Part], p: float):
        """One softmax of queries at positions ``t0 .. t0 + t - 1`` over the union of ``parts``.

        .. math:: O = \\sum_{\\text{parts}} \\mathrm{softmax}_{\\cup}(\\alpha q K^\\top +
            \\log M)\\, V,\\qquad M_{ij} = \\mathrm{allowed}(t_0 + i, \\mathrm{pos}_j)
            \\wedge \\mathrm{valid}_j .

        ``q (b, h, t, e)``; each part ``(k (b, h, s, e), v, valid (b, s), pos (s,))``. Returns
        ``(b, h, t, e)``; rows with no allowed key are zeros.
        """
        qpos = torch.arange(t0, t0 + q.shape[2], device=q.device)[:, None]
        kinds = head_parts(self.pattern, self.num_heads)
        scores, values = [], []
        for k, v, valid, pos in parts:
            rows = {
                pa: allowed(self.pattern, qpos, pos[None, :], causal=True, part=pa, **self.params)
                for pa in set(kinds)
            }  # (t, s) per sub-pattern; strided/fixed split the heads
            ok = torch.stack([rows[pa] for pa in kinds]) if len(rows) > 1 else rows[kinds[0]][None]
            ok = ok[None] & valid[:, None, None, :]  # (b, h|1, t, s)
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            scores.append(s.masked_fill_(~ok, -math.inf))
            values.append(v)
        s = torch.cat(scores, -1)
        has_key = torch.isfinite(s).any(-1, keepdim=True)
        w = torch.softmax(s.masked_fill(~has_key, 0.0), -1) * has_key  # safe softmax
        w = F.dropout(w, p)
        out, lo = 0, 0
        for v in values:
            out = out + torch.matmul(w[..., lo : lo + v.shape[2]], v)
            lo += v.shape[2]
        return out


class MultiHeadCrossAttention(nn.Module):
    """Batch-first multi-head attention of ``x`` over a memory (full pattern).

    Args:
        embed_dim: query width ``d``.
        num_heads: heads ``h``.
        memory_dim: memory width (default ``embed_dim``).
        dropout: dropout on attention probabilities.
        bias: biases in the projections.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        memory_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_dims(embed_dim, num_heads, dropout)
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.memory_dim = memory_dim or embed_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.kv_proj = nn.Linear(self.memory_dim, 2 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None,
        memory_padding_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(b, t, d)`` queries.
            memory: ``(b, s, d_m)``; may be None when ``cache`` already holds it.
            memory_padding_mask: ``(b, s)`` bool, True = valid memory position.
            cache: projected memory keys/values, filled on the first call and reused after.

        Returns:
            ``(b, t, d)``.
        """
        sizes = check_shape(x, "x", ("b", "t", self.embed_dim))
        q = rearrange(self.q_proj(x), "b t (h e) -> b h t e", h=self.num_heads)
        if cache is not None and cache.length:
            k, v, mask = cache.k, cache.v, cache.mask
        else:
            if memory is None:
                raise ValueError("memory is required (no cached memory)")
            check_shape(memory, "memory", ("b", "s", self.memory_dim), sizes)
            mask = memory_padding_mask
            if mask is not None:
                check_shape(mask, "memory_padding_mask", ("b", "s"), sizes)
            k, v = rearrange(
                self.kv_proj(memory), "b s (two h e) -> two b h s e", two=2, h=self.num_heads
            )
            if cache is not None:
                full = torch.ones(k.shape[0], k.shape[2], dtype=torch.bool, device=k.device)
                cache.append(k, v, full if mask is None else mask)
        p = self.dropout if self.training else 0.0
        o = full_attention(q, k, v, key_padding_mask=mask, dropout_p=p)
        return self.out_proj(rearrange(o, "b h t e -> b t (h e)"))
