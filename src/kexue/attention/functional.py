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

How each pattern avoids the :math:`n \times n` score matrix (kernel: :mod:`._tiles`; the parts of a
pattern run as one softmax with an O(n e)-memory backward: :mod:`._parts`):

* ``local(w)``: queries in blocks of ``B`` (32); block ``c`` is scored against key blocks
  ``c - L .. c + R`` only (``L = R = ceil(w / B)``; ``R = 0`` when causal): :math:`O(n (w + B))`.
* ``atrous(r)``: residue class ``c = i mod r`` is its own sequence ``c, c + r, ...`` of length
  ``m = ceil(n / r)``, gathered a few classes at a time (never a reshaped copy of all of ``q, k,
  v``); ordinary attention inside each: :math:`O(n^2 / r)`.
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

from kexue.attention._parts import ClassPart, TilePart, run_parts
from kexue.attention._tiles import TilePlan
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
# Each pattern is a list of parts (:mod:`._parts`) over head ranges, run as one softmax.
def _band(q, *, block, left, right, ok_fn, key_valid, heads) -> TilePart:
    """Band layout on ``(b, h, n, e)``: blocks of ``block`` queries see ``left``/``right`` key blocks.

    ``ok_fn(qpos, kpos)`` must be invariant to shifting both by ``block``; ``key_valid (b, g, n)``;
    ``heads = (h0, h1)``.
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
    return TilePart(plan, *heads)


def _default_block(window: int, n: int) -> int:
    """Query block ``B`` of the band layout: 32 rows (fast on CPU: tile waste ``B`` keys per row,
    GEMMs still efficient), or ``n`` when shorter."""
    return max(1, min(32, n))


def _local_part(q, window, causal, key_valid, heads, block=None, exclude_rate=None) -> TilePart:
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
        q, block=block, left=halo, right=0 if causal else halo, ok_fn=ok_fn,
        key_valid=key_valid[:, None], heads=heads,
    )  # fmt: skip


def _atrous_part(q, rate, causal, key_valid, heads) -> ClassPart:
    """Residue class ``c = i mod r`` is its own sequence ``c, c + r, ...`` (gathered in chunks)."""
    return ClassPart(rate, q.shape[2], *heads, causal=causal, key_valid=key_valid)


def _all_heads(q) -> tuple[int, int]:
    return 0, q.shape[1]


def _split(q) -> tuple[tuple[int, int], tuple[int, int]]:
    """Head ranges of the Sparse Transformer's A1 (first ``h - h // 2``) and A2 (the rest)."""
    h = q.shape[1]
    h1 = h - h // 2
    return (0, h1), (h1, h)


def _run(parts, q, k, v, scale, dropout_p) -> torch.Tensor:
    return run_parts([p for p in parts if p.h1 > p.h0], q, k, v, scale, dropout_p)[0]


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
    part = _local_part(q, window, causal, kv, _all_heads(q), block_size)
    return _run([part], q, k, v, sc, p)


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
    return _run([_atrous_part(q, rate, causal, kv, _all_heads(q))], q, k, v, sc, p)


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
    heads = _all_heads(q)
    atr = _atrous_part(q, prm["rate"], causal, kv, heads)  # contains j = i
    loc = _local_part(q, prm["window"], causal, kv, heads, exclude_rate=prm["rate"])
    return _run([atr, loc], q, k, v, sc, p)


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
    a1, a2 = _split(q)
    parts = [_local_part(q, stride - 1, causal, kv, a1), _atrous_part(q, stride, causal, kv, a2)]
    return _run(parts, q, k, v, sc, p)


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

    def ok_fn(qi, kj):  # block-diagonal: band layout with block = stride and no halo
        return kj <= qi if causal else torch.ones_like(qi - kj, dtype=torch.bool)

    a1, a2 = _split(q)
    blocks = _band(q, block=stride, left=0, right=0, ok_fn=ok_fn, key_valid=kv[:, None], heads=a1)
    parts = [blocks]
    if idx.numel():  # the summary columns: every query block sees the gathered keys k[idx]
        block = max(1, min(64, n))
        plan = TilePlan(
            block=block, tiles=-(-n // block), n_q=n, n_k=idx.numel(), key_len=idx.numel(),
            key_valid=kv[:, None, idx], full=True, kpos=idx,
            pred=(lambda qi, kj: kj <= qi) if causal else None,
        )  # fmt: skip
        parts.append(TilePart(plan, *a2, kidx=idx))
    return _run(parts, q, k, v, sc, p)


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
