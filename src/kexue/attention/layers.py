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

Incremental decoding: with a :class:`KVCache`, the new tokens (positions ``t0 .. t0 + t - 1``)
attend the cached keys plus themselves under the causal pattern. A first call on an empty cache
uses the blocked kernel; later calls use a dense ``(t, t0 + t)`` row mask of the pattern (cheap for
a few new tokens). The cache keeps every key (the local pattern could trim it; not done).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from kexue.attention.functional import attention, full_attention, masked_attention
from kexue.attention.patterns import KINDS, allowed, head_parts, resolve_params
from kexue.core.checks import check_positive_int, check_shape


@dataclass
class KVCache:
    """Keys/values (and key validity) of the tokens seen so far.

    Attributes:
        k: ``(b, h, t, e)`` or None before the first call.
        v: ``(b, h, t, e)`` or None.
        mask: ``(b, t)`` bool, True = valid key, or None.
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions ``t``."""
        return 0 if self.k is None else self.k.shape[2]

    def append(
        self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append ``k, v (b, h, t_new, e)`` and ``mask (b, t_new)``; return the full tensors."""
        if self.k is None:
            self.k, self.v, self.mask = k, v, mask
        else:
            self.k = torch.cat([self.k, k], 2)
            self.v = torch.cat([self.v, v], 2)
            self.mask = torch.cat([self.mask, mask], 1)
        return self.k, self.v, self.mask

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows ``index (b',)`` in place (beam search)."""
        if self.k is not None:
            self.k, self.v, self.mask = self.k[index], self.v[index], self.mask[index]


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
        if cache is None or cache.length == 0:
            if cache is not None:
                if not self.causal:
                    raise ValueError("a KV cache needs causal=True")
                mask = key_padding_mask
                if mask is None:
                    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
                cache.append(k, v, mask)
            o = attention(
                q, k, v, self.pattern, causal=self.causal, key_padding_mask=key_padding_mask,
                dropout_p=p, **self.params,
            )  # fmt: skip
        else:
            o = self._decode(q, k, v, key_padding_mask, cache, p)
        return self.out_proj(rearrange(o, "b h n e -> b n (h e)"))

    def _decode(self, q, k, v, key_padding_mask, cache: KVCache, p: float) -> torch.Tensor:
        if not self.causal:
            raise ValueError("a KV cache needs causal=True")
        t0, t = cache.length, q.shape[2]
        mask = key_padding_mask
        if mask is None:
            mask = torch.ones(q.shape[0], t, dtype=torch.bool, device=q.device)
        k_all, v_all, m_all = cache.append(k, v, mask)
        qpos = torch.arange(t0, t0 + t, device=q.device)[:, None]
        kpos = torch.arange(t0 + t, device=q.device)[None, :]
        rows = torch.stack(
            [
                allowed(self.pattern, qpos, kpos, causal=True, part=part, **self.params)
                for part in head_parts(self.pattern, self.num_heads)
            ]
        )  # (h, t, t0 + t)
        return masked_attention(q, k_all, v_all, rows, key_padding_mask=m_all, dropout_p=p)


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
