r"""Sparse self-attention that really saves time and memory: full, atrous, local, sparse, strided, fixed.

Su Jianlin, 《为节约而生：从标准Attention到稀疏Attention》 (kexue.fm, 2019-07-27); Child et al.,
"Generating Long Sequences with Sparse Transformers" (2019). For one head,

.. math::

    \mathrm{Attn}(Q, K, V)_i = \sum_{j \in S(i)} \frac{e^{\alpha\, q_i \cdot k_j}}
        {\sum_{j' \in S(i)} e^{\alpha\, q_i \cdot k_{j'}}}\, v_j ,\qquad \alpha = 1/\sqrt{e},

where the allowed set :math:`S(i)` is the pattern of :mod:`kexue.attention.patterns` intersected
with the key padding mask (and :math:`j \le i` when causal). A query with empty :math:`S(i)`
returns zeros. All tensors are batch-first ``(b, h, n, e)``; ``key_padding_mask`` is ``(b, n)``
bool with True = valid key.

How each pattern avoids the :math:`n \times n` score matrix (kernel: :mod:`._tiles`):

* ``local(w)``: queries in blocks of ``B`` (32); block ``c`` is scored against key blocks
  ``c - L .. c + R`` only (``L = R = ceil(w / B)``; ``R = 0`` when causal): :math:`O(n (w + B))`.
* ``atrous(r)``: pad ``n`` to a multiple of ``r`` and reshape ``(m r) -> r`` sequences of length
  ``m = n / r`` (one per residue class); ordinary attention inside each: :math:`O(n^2 / r)`.
* ``sparse(r, w)``: the atrous part (which contains ``j = i``) and the local part *without* the
  offsets that are multiples of ``r`` are computed separately, each returning its log-normaliser,
  and merged into **one** softmax over the union (each key once): :math:`O(n (n / r + w))`.
* ``strided(l)`` / ``fixed(l, c)``: heads split, first ``h - h // 2`` heads :math:`A^{(1)}`, last
  ``h // 2`` heads :math:`A^{(2)}`; strided = local(``l - 1``) + atrous(``l``); fixed =
  block-diagonal blocks of ``l`` + the ``c`` summary columns of every block.

Lengths that are not multiples of a block or rate are padded internally (padding is always
masked, unlike the original Keras code) and cropped. Patterns are defined on absolute indices of
the given tensors: with right padding (the house convention) valid tokens keep their positions;
with left padding the residue classes shift with the padding. Deviations from Su's Keras layers (design
note §4): the local part of sparse is not dilated and the self key is counted once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from kexue.attention._tiles import TilePlan, merge_parts, tile_attention
from kexue.attention.patterns import head_pattern_masks, resolve_params
from kexue.core.checks import check_positive_int, check_shape, check_tensor

__all__ = [
    "full_attention",
    "masked_attention",
    "atrous_attention",
    "local_attention",
    "sparse_attention",
    "strided_attention",
    "fixed_attention",
    "attention",
]


# --- shared docstring sections ---------------------------------------------------------------
# Every public function documents the same q/k/v and options; they are written once here and
# substituted into each docstring (``help()`` and the rendered docs show the complete text).
_I = "\n        "  # continuation indent of an Args entry
_DOC = {
    "{qkv}": _I.join(
        [
            "q: ``(b, h, n, e)`` queries, floating point.",
            "k: ``(b, h, n, e)`` keys (same dtype and device as ``q``).",
            "v: ``(b, h, n, e_v)`` values (same dtype and device as ``q``).",
        ]
    ),
    "{qkv_cross}": _I.join(
        [
            "q: ``(b, h, t, e)`` queries, floating point.",
            "k: ``(b, h, s, e)`` keys (same dtype and device as ``q``).",
            "v: ``(b, h, s, e_v)`` values (same dtype and device as ``q``).",
        ]
    ),
    "{causal}": "causal: keep only ``j <= i`` (no query sees a later key).",
    "{options}": _I.join(
        [
            "key_padding_mask: ``(b, n)`` bool (``(b, s)`` for cross shapes), True = valid key;",
            "    the opposite of ``nn.MultiheadAttention``'s polarity. None: all valid.",
            "dropout_p: dropout on the normalised attention probabilities, in ``[0, 1)``",
            "    (applied only when ``training``; kept weights are scaled by ``1 / (1 - p)``).",
            "scale: score scale :math:`\\alpha`, default ``1 / sqrt(e)``.",
            "training: apply dropout (pass ``module.training``).",
        ]
    ),
    "{raises}": _I.join(
        [
            "TypeError: ``q``/``k``/``v`` are not tensors, ``q`` is not floating point, ``k`` or",
            "    ``v`` has another dtype than ``q``, ``key_padding_mask`` is not bool, or a",
            "    pattern parameter is not an int.",
            "ValueError: a shape disagrees with the ones above (the message names the argument),",
            "    a tensor is on another device than ``q``, a pattern parameter is out of range, or",
            "    ``dropout_p`` is outside ``[0, 1)``.",
        ]
    ),
}


def _shared_doc(fn):
    """Fill the ``{qkv}``/``{qkv_cross}``/``{causal}``/``{options}``/``{raises}`` sections."""
    doc = fn.__doc__
    for key, text in _DOC.items():
        doc = doc.replace(key, text)
    assert not any(key in doc for key in _DOC), fn.__name__
    fn.__doc__ = doc
    return fn


# --- boundary checks -------------------------------------------------------------------------
def _check_qkv(
    q, k, v, key_padding_mask, self_attention: bool = True, mask=None
) -> tuple[int, int, int]:
    """Shapes, dtypes and devices of the public arguments (one clear error naming the argument)."""
    sizes = check_shape(q, "q", ("b", "h", "n" if self_attention else "t", "e"))
    check_shape(k, "k", ("b", "h", "n", "e"), sizes)
    check_shape(v, "v", ("b", "h", "n", None), sizes)
    if not q.is_floating_point():
        raise TypeError(f"q must be floating point, got {q.dtype}")
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise TypeError(
                f"{name} must have q's dtype {q.dtype}, got {x.dtype} (cast q, k and v to one "
                "floating dtype)"
            )
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; use one device")
    if key_padding_mask is not None:
        check_shape(key_padding_mask, "key_padding_mask", ("b", "n"), sizes)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"key_padding_mask must be bool (True = valid), got {key_padding_mask.dtype}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(
                f"key_padding_mask is on {key_padding_mask.device} but q is on {q.device}"
            )
    if mask is not None:
        check_tensor(mask, "mask")
        if mask.device != q.device:
            raise ValueError(f"mask is on {mask.device} but q is on {q.device}")
        want = (sizes["b"], sizes["h"], sizes["t" if not self_attention else "n"], sizes["n"])
        try:
            torch.broadcast_shapes(tuple(mask.shape), want)
        except RuntimeError:
            raise ValueError(
                f"mask must broadcast to (b, h, t, s) = {want}, got {tuple(mask.shape)}"
            ) from None
    return sizes["b"], sizes["h"], sizes["n"]


def _pad_seq(x: torch.Tensor, before: int, after: int, value=0.0) -> torch.Tensor:
    """Pad the sequence dim (dim 2 of ``(b, h, n, e)``, dim 1 of ``(b, n)``); no copy if nothing."""
    if before == after == 0:
        return x
    return F.pad(x, (0, 0, before, after) if x.dim() == 4 else (before, after), value=value)


def _scale(scale: float | None, e: int) -> float:
    return 1.0 / math.sqrt(e) if scale is None else float(scale)


def _dropout(dropout_p: float, training: bool) -> float:
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return dropout_p if training else 0.0


def _valid(key_padding_mask: torch.Tensor | None, b: int, n: int, device) -> torch.Tensor:
    if key_padding_mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=device)
    return key_padding_mask


# --- dense paths ------------------------------------------------------------------------------
@_shared_doc
def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Readable dense reference: softmax over an explicit bool mask (O(t s) memory).

    .. math:: O = \\mathrm{softmax}(\\alpha Q K^\\top + \\log M) V

    Args:
        {qkv_cross}
        mask: bool, broadcastable to ``(b, h, t, s)``, True = may attend; None = all.
        {options}

    Returns:
        ``(b, h, t, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """
    b, _, _ = _check_qkv(q, k, v, key_padding_mask, self_attention=False, mask=mask)
    s = torch.matmul(q, k.transpose(-1, -2)) * _scale(scale, q.shape[-1])  # (b, h, t, s)
    ok = torch.ones_like(s, dtype=torch.bool)
    if mask is not None:
        ok = ok & check_tensor(mask, "mask").to(torch.bool)
    if key_padding_mask is not None:
        ok = ok & key_padding_mask[:, None, None, :]
    s = s.masked_fill(~ok, -math.inf)
    has_key = ok.any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(~has_key, 0.0), -1) * has_key  # safe softmax
    p = F.dropout(p, _dropout(dropout_p, training))
    return torch.matmul(p, v)


@_shared_doc
def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Standard attention through ``F.scaled_dot_product_attention`` (flash kernel on CPU).

    Args:
        {qkv_cross}
        {causal} Needs ``t == s``.
        {options}

    Returns:
        ``(b, h, t, e_v)``; rows with no valid key are zeros.

    Raises:
        {raises}
    """
    _check_qkv(q, k, v, key_padding_mask, self_attention=False)
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(
            f"causal full_attention needs t == s, got q {tuple(q.shape)} k {tuple(k.shape)}"
        )
    p = _dropout(dropout_p, training)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal, scale=scale)
    ok = key_padding_mask[:, None, None, :]  # (b, 1, 1, s)
    if causal:
        t = q.shape[2]
        ok = ok & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    has_key = ok.any(-1, keepdim=True)  # (b, 1, t|1, 1)
    if not bool(has_key.all()):
        ok = ok | ~has_key  # give empty rows something finite, zero them below
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=ok, dropout_p=p, scale=scale)
    return out * has_key if not bool(has_key.all()) else out


# --- blocked paths ----------------------------------------------------------------------------
def _band(
    q, k, v, *, block, left, right, ok_fn, key_valid, scale, dropout_p
) -> tuple[torch.Tensor, torch.Tensor]:
    """Band layout on ``(b, h, n, e)``: blocks of ``block`` queries see ``left``/``right`` key blocks.

    ``ok_fn(qpos, kpos)`` must be invariant to shifting both by ``block``; ``key_valid (b, g, n)``.
    Returns ``(out, lse)`` cropped to ``n``.
    """
    n = q.shape[2]
    tiles = -(-n // block)
    left, right = min(left, tiles - 1), min(right, tiles - 1)
    pad = tiles * block - n
    kv = F.pad(key_valid, (left * block, pad + right * block), value=False)  # tile coordinates
    t = (left + right + 1) * block
    qpos = torch.arange(block, device=q.device) + left * block  # a representative tile
    static_ok = ok_fn(qpos[:, None], torch.arange(t, device=q.device)[None, :])
    plan = TilePlan(
        block=block, tiles=tiles, n_q=n, n_k=n, key_len=kv.shape[-1], key_valid=kv, left=left,
        right=right, static_ok=None if bool(static_ok.all()) else static_ok,
    )  # fmt: skip
    return tile_attention(plan, q, k, v, scale, dropout_p)


def _dense_tiles(
    q, k, v, *, kpos, pred, key_valid, scale, dropout_p, block=64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full layout: every query block sees all keys ``k (b, h, s, e)`` at positions ``kpos (s,)``,
    masked by ``pred(qpos, kpos)`` (query positions ``0..n-1``) and ``key_valid (b, g, s)``."""
    n = q.shape[2]
    block = max(1, min(block, n))
    tiles = -(-n // block)
    plan = TilePlan(
        block=block, tiles=tiles, n_q=n, n_k=k.shape[2], key_len=k.shape[2], key_valid=key_valid,
        full=True, pred=pred, kpos=kpos,
    )  # fmt: skip
    return tile_attention(plan, q, k, v, scale, dropout_p)


def _default_block(window: int, n: int) -> int:
    """Query block ``B`` of the band layout: 32 rows (fast on CPU: tile waste ``B`` keys per row,
    GEMMs still efficient), or ``n`` when shorter."""
    return max(1, min(32, n))


def _local_parts(
    q, k, v, window, causal, key_valid, scale, dropout_p, block=None, exclude_rate=None
):
    n = q.shape[2]
    block = _default_block(window, n) if block is None else check_positive_int(block, "block_size")
    halo = -(-window // block) if window > 0 else 0

    def ok_fn(qi, kj):
        d = qi - kj
        ok = (d >= 0) & (d <= window) if causal else d.abs() <= window
        if exclude_rate is not None:  # sparse: multiples of the rate belong to the atrous part
            ok = ok & (d.remainder(exclude_rate) != 0)
        return ok

    return _band(
        q, k, v, block=block, left=halo, right=0 if causal else halo, ok_fn=ok_fn,
        key_valid=key_valid[:, None], scale=scale, dropout_p=dropout_p,
    )  # fmt: skip


def _atrous_parts(q, k, v, rate, causal, key_valid, scale, dropout_p):
    b, h, n, _ = q.shape
    m = -(-n // rate)
    pad = m * rate - n
    # residue class c = i mod r becomes its own sequence i = c, c + r, c + 2r, ...
    qc, kc, vc = (
        rearrange(_pad_seq(x, 0, pad), "b h (m r) e -> b (r h) m e", r=rate).contiguous()
        for x in (q, k, v)
    )
    kv = rearrange(F.pad(key_valid, (0, pad), value=False), "b (m r) -> b r 1 m", r=rate)
    kv = kv.expand(b, rate, h, m).reshape(b, rate * h, m)
    pos = torch.arange(m, device=q.device)
    out, lse = _dense_tiles(
        qc, kc, vc, kpos=pos, pred=(lambda qi, kj: kj <= qi) if causal else None, key_valid=kv,
        scale=scale, dropout_p=dropout_p,
    )  # fmt: skip
    out = rearrange(out, "b (r h) m e -> b h (m r) e", r=rate)[:, :, :n]
    lse = rearrange(lse, "b (r h) m -> b h (m r)", r=rate)[:, :, :n]
    return out, lse


@_shared_doc
def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
    block_size: int | None = None,
) -> torch.Tensor:
    """Local attention: query ``i`` sees keys ``|i - j| <= window`` (causal: ``i - window <= j <= i``).

    Args:
        {qkv}
        window: half-width ``w >= 0`` (``2w + 1`` keys; causal ``w + 1``).
        {causal}
        {options}
        block_size: query block ``B`` (default 32); cost ``O(n (2 ceil(w/B)+1) B)``.

    Returns:
        ``(b, h, n, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """
    b, _, n = _check_qkv(q, k, v, key_padding_mask)
    window = check_positive_int(window, "window", 0)
    kv = _valid(key_padding_mask, b, n, q.device)
    sc, p = _scale(scale, q.shape[-1]), _dropout(dropout_p, training)
    return _local_parts(q, k, v, window, causal, kv, sc, p, block_size)[0]


@_shared_doc
def atrous_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Atrous (dilated) attention: query ``i`` sees keys with ``(i - j) % rate == 0``.

    Args:
        {qkv}
        rate: ``r >= 1`` (``r = 1`` is full attention).
        {causal}
        {options}

    Returns:
        ``(b, h, n, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """
    b, _, n = _check_qkv(q, k, v, key_padding_mask)
    rate = check_positive_int(rate, "rate", 1)
    kv = _valid(key_padding_mask, b, n, q.device)
    sc, p = _scale(scale, q.shape[-1]), _dropout(dropout_p, training)
    return _atrous_parts(q, k, v, rate, causal, kv, sc, p)[0]


@_shared_doc
def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    window: int | None = None,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Su's sparse attention: one softmax over ``local(window) ∪ atrous(rate)``, each key once.

    Args:
        {qkv}
        rate: ``r >= 2``.
        window: local half-width, default ``r - 1`` (any two positions linked within two layers).
        {causal}
        {options}

    Returns:
        ``(b, h, n, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """
    b, _, n = _check_qkv(q, k, v, key_padding_mask)
    prm = resolve_params("sparse", rate=rate, window=window)
    kv = _valid(key_padding_mask, b, n, q.device)
    sc, p = _scale(scale, q.shape[-1]), _dropout(dropout_p, training)
    atr = _atrous_parts(q, k, v, prm["rate"], causal, kv, sc, p)  # contains j = i
    loc = _local_parts(q, k, v, prm["window"], causal, kv, sc, p, exclude_rate=prm["rate"])
    return merge_parts([atr, loc])[0]


def _split_heads(q, k, v, first, second):
    h1 = q.shape[1] - q.shape[1] // 2
    outs = []
    if h1 > 0:
        outs.append(first(q[:, :h1], k[:, :h1], v[:, :h1]))
    if h1 < q.shape[1]:
        outs.append(second(q[:, h1:], k[:, h1:], v[:, h1:]))
    return torch.cat(outs, 1)


@_shared_doc
def strided_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    stride: int,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Sparse Transformer "strided" pattern, heads split (Child et al. 2019, §4.2-4.3).

    First ``h - h // 2`` heads: local, ``|i - j| <= stride - 1`` (causal: the previous
    ``stride`` positions including ``i``, OpenAI's ``local``); last ``h // 2`` heads:
    ``(i - j) % stride == 0``.

    Args:
        {qkv}
        stride: ``l >= 1``, typically ``~sqrt(n)``.
        {causal} The paper's setting.
        {options}

    Returns:
        ``(b, h, n, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """
    b, _, n = _check_qkv(q, k, v, key_padding_mask)
    stride = resolve_params("strided", stride=stride)["stride"]
    kv = _valid(key_padding_mask, b, n, q.device)
    sc, p = _scale(scale, q.shape[-1]), _dropout(dropout_p, training)
    return _split_heads(
        q, k, v,
        lambda a, b_, c: _local_parts(a, b_, c, stride - 1, causal, kv, sc, p)[0],
        lambda a, b_, c: _atrous_parts(a, b_, c, stride, causal, kv, sc, p)[0],
    )  # fmt: skip


@_shared_doc
def fixed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    stride: int,
    summary: int = 1,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Sparse Transformer "fixed" pattern, heads split (Child et al. 2019, §4.3).

    First ``h - h // 2`` heads: same block, ``i // stride == j // stride``; last ``h // 2`` heads:
    the summary columns ``j % stride >= stride - summary`` of every block.

    Args:
        {qkv}
        stride: block length ``l >= 1``.
        summary: ``1 <= c <= l`` summary positions per block.
        {causal} The paper's setting.
        {options}

    Returns:
        ``(b, h, n, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """
    b, _, n = _check_qkv(q, k, v, key_padding_mask)
    prm = resolve_params("fixed", stride=stride, summary=summary)
    stride, summary = prm["stride"], prm["summary"]
    kv = _valid(key_padding_mask, b, n, q.device)
    sc, p = _scale(scale, q.shape[-1]), _dropout(dropout_p, training)
    idx = torch.arange(n, device=q.device)
    idx = idx[idx.remainder(stride) >= stride - summary]  # summary columns

    def blocks(a, b_, c):  # block-diagonal: band layout with block = stride and no halo
        def ok_fn(qi, kj):
            return kj <= qi if causal else torch.ones_like(qi - kj, dtype=torch.bool)

        return _band(
            a, b_, c, block=stride, left=0, right=0, ok_fn=ok_fn, key_valid=kv[:, None],
            scale=sc, dropout_p=p,
        )[0]  # fmt: skip

    def summaries(a, b_, c):
        if idx.numel() == 0:
            return torch.zeros(*a.shape[:-1], c.shape[-1], dtype=c.dtype, device=c.device)
        return _dense_tiles(
            a, b_[:, :, idx], c[:, :, idx], kpos=idx, pred=(lambda qi, kj: kj <= qi) if causal else None,
            key_valid=kv[:, None, idx], scale=sc, dropout_p=p,
        )[0]  # fmt: skip

    return _split_heads(q, k, v, blocks, summaries)


@_shared_doc
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: str = "full",
    *,
    impl: str = "blocked",
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    training: bool = True,
    **params,
) -> torch.Tensor:
    """Dispatch on ``pattern``; ``impl="dense"`` is the O(n^2) masked reference, same signature.

    Args:
        {qkv}
        pattern: one of ``full, atrous, local, sparse, strided, fixed``.
        impl: ``"blocked"`` (fast path) or ``"dense"`` (softmax over :func:`head_pattern_masks`).
        {causal}
        {options}
        **params: ``rate``, ``window``, ``stride``, ``summary`` as the pattern needs.

    Returns:
        ``(b, h, n, e_v)``; rows with no allowed key are zeros.

    Raises:
        {raises}
    """

    kw = dict(
        causal=causal,
        key_padding_mask=key_padding_mask,
        dropout_p=dropout_p,
        scale=scale,
        training=training,
    )
    if impl == "dense":
        _check_qkv(q, k, v, key_padding_mask)
        prm = resolve_params(pattern, **params)
        mask = head_pattern_masks(pattern, q.shape[2], q.shape[1], causal=causal, **prm).to(
            q.device
        )
        return masked_attention(q, k, v, mask, **{x: kw[x] for x in kw if x != "causal"})
    if impl != "blocked":
        raise ValueError(f"impl must be 'blocked' or 'dense', got {impl!r}")
    prm = resolve_params(pattern, **params)
    if pattern == "full":
        return full_attention(q, k, v, **kw)
    if pattern == "local":
        return local_attention(q, k, v, prm["window"], **kw)
    if pattern == "atrous":
        return atrous_attention(q, k, v, prm["rate"], **kw)
    if pattern == "sparse":
        return sparse_attention(q, k, v, prm["rate"], prm["window"], **kw)
    if pattern == "strided":
        return strided_attention(q, k, v, prm["stride"], **kw)
    return fixed_attention(q, k, v, prm["stride"], prm["summary"], **kw)
