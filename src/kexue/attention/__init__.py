"""kexue.attention: sparse attention that really saves time and memory (article 1).

Functional kernels on ``(b, h, n, e)`` tensors (:mod:`kexue.attention.functional`), dense reference
masks and pictures as data (:mod:`kexue.attention.patterns`), KV caches for decoding
(:mod:`kexue.attention.cache`), modules, Transformer blocks and a causal character LM (:mod:`kexue.attention.lm`); :mod:`kexue.attention.recipe` trains it on the
shipped text.
"""

from kexue.attention._parts import set_kernel_threads
from kexue.attention.cache import BoundedKVCache, KVCache
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
from kexue.attention.layers import MultiHeadCrossAttention, MultiHeadSelfAttention
from kexue.attention.lm import CharLM
from kexue.attention.patterns import (
    KINDS,
    head_pattern_masks,
    pattern_mask,
    pattern_picture,
    pattern_title,
)
from kexue.attention.transformer import (
    DecoderCache,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

__all__ = [
    "KINDS",
    "BoundedKVCache",
    "CharLM",
    "DecoderCache",
    "KVCache",
    "MultiHeadCrossAttention",
    "MultiHeadSelfAttention",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "atrous_attention",
    "attention",
    "fixed_attention",
    "full_attention",
    "head_pattern_masks",
    "local_attention",
    "masked_attention",
    "pattern_mask",
    "pattern_picture",
    "pattern_title",
    "set_kernel_threads",
    "sparse_attention",
    "strided_attention",
]
