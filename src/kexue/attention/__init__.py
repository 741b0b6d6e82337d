"""kexue.attention: sparse attention that really saves time and memory (article 1).

Functional kernels on ``(b, h, n, e)`` tensors (:mod:`kexue.attention.functional`), dense reference
masks and pictures (:mod:`kexue.attention.patterns`), modules and Transformer blocks.
"""

from kexue.attention.functional import (
    atrous_attention,
    attention,
    fixed_attention,
    full_attention,
    local_attention,
    masked_attention,
    sparse_attention,
    strided_attention,
)
from kexue.attention.layers import KVCache, MultiHeadCrossAttention, MultiHeadSelfAttention
from kexue.attention.patterns import KINDS, draw_pattern, head_pattern_masks, pattern_mask
from kexue.attention.transformer import (
    DecoderCache,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

__all__ = [
    "KINDS",
    "DecoderCache",
    "KVCache",
    "MultiHeadCrossAttention",
    "MultiHeadSelfAttention",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "atrous_attention",
    "attention",
    "draw_pattern",
    "fixed_attention",
    "full_attention",
    "head_pattern_masks",
    "local_attention",
    "masked_attention",
    "pattern_mask",
    "sparse_attention",
    "strided_attention",
]
