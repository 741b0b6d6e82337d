r"""Pre-norm Transformer encoder/decoder blocks whose self-attention takes any sparse pattern.

.. math::

    h = x + \mathrm{Drop}(\mathrm{MHA}_S(\mathrm{LN}(x))),\quad
    [\,h \leftarrow h + \mathrm{Drop}(\mathrm{MHA}_{\times}(\mathrm{LN}(h), M))\,]\quad
    y = h + \mathrm{Drop}(W_2\,\phi(W_1 \mathrm{LN}(h)))

(pre-norm, Xiong et al. 2020; the bracketed cross-attention only in the decoder). The sparse
self-attention is :class:`kexue.attention.layers.MultiHeadSelfAttention` (Su Jianlin,
《为节约而生：从标准Attention到稀疏Attention》, 2019). Decoder blocks cache self-attention keys/values
and the projected memory in a :class:`DecoderCache` for incremental decoding (seq2seq, LMs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kexue.attention.cache import BoundedKVCache, KVCache
from kexue.attention.layers import MultiHeadCrossAttention, MultiHeadSelfAttention
from kexue.core.checks import check_positive_int

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def _ffn(embed_dim: int, ffn_dim: int | None, dropout: float, activation: str) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    hidden = check_positive_int(ffn_dim or 4 * embed_dim, "ffn_dim")
    return nn.Sequential(
        nn.Linear(embed_dim, hidden),
        _ACTIVATIONS[activation](),
        nn.Dropout(dropout),
        nn.Linear(hidden, embed_dim),
    )


@dataclass
class DecoderCache:
    """Per-block decoding state: self-attention keys/values and the projected memory.

    ``self_attn`` may be a :class:`BoundedKVCache` (only the keys a later query can attend:
    O(w) memory for a local pattern); :meth:`TransformerDecoderBlock.new_cache` builds one.
    """

    self_attn: KVCache | BoundedKVCache = field(default_factory=KVCache)
    cross_attn: KVCache = field(default_factory=KVCache)

    @property
    def length(self) -> int:
        """Number of decoded positions so far."""
        return self.self_attn.length

    def reorder(self, index: torch.Tensor, *, source: bool = True) -> None:
        """Select batch rows ``index (b',)`` in place (beam search); ``source=False`` leaves the
        cross-attention keys alone (rows that are copies of one another: beams of one source)."""
        self.self_attn.reorder(index)
        if source:
            self.cross_attn.reorder(index)


class TransformerEncoderBlock(nn.Module):
    """Pre-norm encoder block: sparse self-attention + feed-forward.

    Args:
        embed_dim: model width ``d``.
        num_heads: heads ``h``.
        ffn_dim: feed-forward width (default ``4 d``).
        pattern: self-attention pattern (see :class:`MultiHeadSelfAttention`).
        rate: atrous/sparse rate or strided/fixed stride.
        window: local half-width.
        summary: fixed pattern's summary size.
        causal: causal self-attention (then a :class:`KVCache` can be passed).
        dropout: dropout on attention probabilities and residual branches.
        activation: ``"gelu"`` or ``"relu"``.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        ffn_dim: int | None = None,
        pattern: str = "full",
        rate: int | None = None,
        window: int | None = None,
        summary: int = 1,
        causal: bool = False,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.attn = MultiHeadSelfAttention(
            embed_dim, num_heads, pattern=pattern, rate=rate, window=window, summary=summary,
            causal=causal, dropout=dropout,
        )  # fmt: skip
        self.norm2 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.ffn = _ffn(embed_dim, ffn_dim, dropout, activation)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Args:
            x: ``(b, n, d)`` (with a cache: the new tokens).
            key_padding_mask: ``(b, n)`` bool, True = valid token.
            cache: self-attention :class:`KVCache` (causal blocks only), updated in place.

        Returns:
            ``(b, n, d)``.
        """
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask, cache=cache))
        return x + self.drop(self.ffn(self.norm2(x)))


class TransformerDecoderBlock(nn.Module):
    """Pre-norm decoder block: causal sparse self-attention, cross-attention, feed-forward.

    Args:
        embed_dim: model width ``d``.
        num_heads: heads ``h``.
        ffn_dim: feed-forward width (default ``4 d``).
        pattern: self-attention pattern (always causal).
        rate: atrous/sparse rate or strided/fixed stride.
        window: local half-width.
        summary: fixed pattern's summary size.
        cross_attention: include the cross-attention sub-layer (False: decoder-only LM block).
        memory_dim: memory width (default ``embed_dim``).
        dropout: dropout on attention probabilities and residual branches.
        activation: ``"gelu"`` or ``"relu"``.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        ffn_dim: int | None = None,
        pattern: str = "full",
        rate: int | None = None,
        window: int | None = None,
        summary: int = 1,
        cross_attention: bool = True,
        memory_dim: int | None = None,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.self_attn = MultiHeadSelfAttention(
            embed_dim, num_heads, pattern=pattern, rate=rate, window=window, summary=summary,
            causal=True, dropout=dropout,
        )  # fmt: skip
        self.cross_attn = None
        if cross_attention:
            self.norm_x = nn.LayerNorm(embed_dim, eps=norm_eps)
            self.cross_attn = MultiHeadCrossAttention(
                embed_dim, num_heads, memory_dim=memory_dim, dropout=dropout
            )
        self.norm2 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.ffn = _ffn(embed_dim, ffn_dim, dropout, activation)
        self.drop = nn.Dropout(dropout)

    def new_cache(self, *, bounded: bool = True) -> DecoderCache:
        """An empty :class:`DecoderCache`; ``bounded``: the self-attention cache is a
        :class:`BoundedKVCache` (keeps only the keys a later query of the pattern can attend)."""
        return DecoderCache(self_attn=self.self_attn.new_cache(bounded=bounded))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> torch.Tensor:
        """Args:
            x: ``(b, t, d)`` target tokens (with a cache: the new ones).
            memory: ``(b, s, d_m)`` encoder output (needed unless cached or no cross-attention).
            key_padding_mask: ``(b, t)`` bool, True = valid target token.
            memory_padding_mask: ``(b, s)`` bool, True = valid memory position.
            cache: :class:`DecoderCache`, updated in place.

        Returns:
            ``(b, t, d)``.
        """
        sc = cache.self_attn if cache is not None else None
        x = x + self.drop(self.self_attn(self.norm1(x), key_padding_mask, cache=sc))
        if self.cross_attn is not None:
            cc = cache.cross_attn if cache is not None else None
            x = x + self.drop(
                self.cross_attn(self.norm_x(x), memory, memory_padding_mask, cache=cc)
            )
        return x + self.drop(self.ffn(self.norm2(x)))
