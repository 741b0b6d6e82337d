r"""Sparse attention patterns as dense boolean masks: the reference the fast kernels are tested on.

Su Jianlin, 《为节约而生：从标准Attention到稀疏Attention》 (kexue.fm, 2019-07-27), and Child et al.,
"Generating Long Sequences with Sparse Transformers" (2019). Query ``i`` may attend key ``j`` iff
``allowed(i, j)`` (0-based absolute positions, :math:`d = i - j`):

.. math::

    \text{full}:\ \text{true} \qquad
    \text{atrous}(r):\ d \bmod r = 0 \qquad
    \text{local}(w):\ |d| \le w \qquad
    \text{sparse}(r, w{=}r{-}1):\ |d| \le w \ \lor\ d \bmod r = 0

and, with ``causal=True``, additionally :math:`j \le i`. The Sparse Transformer patterns are split
over heads (Child et al. §4.2 "factorized attention"; the first ``h - h // 2`` heads use
:math:`A^{(1)}`, the last ``h // 2`` heads use :math:`A^{(2)}`; stride :math:`l`):

* ``strided``: :math:`A^{(1)} = \{j : |d| \le l - 1\}` (OpenAI's ``local``:
  :math:`i-(l-1) \le j \le i` when causal), :math:`A^{(2)} = \{j : d \bmod l = 0\}`;
* ``fixed`` (summary size :math:`c`): :math:`A^{(1)} = \{j : \lfloor j/l \rfloor = \lfloor i/l
  \rfloor\}`, :math:`A^{(2)} = \{j : j \bmod l \ge l - c\}`.

``pattern_mask(kind, n, part=None)`` returns the union of the two parts for strided/fixed (the
"merged head" of the paper, used for pictures); ``head_pattern_masks`` returns the per-head masks the
kernels implement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from kexue.core.checks import check_positive_int

KINDS = ("full", "atrous", "local", "sparse", "strided", "fixed")


def resolve_params(
    kind: str,
    *,
    rate: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    summary: int = 1,
) -> dict[str, int]:
    """Validate a pattern's hyper-parameters and fill in defaults.

    Args:
        kind: one of :data:`KINDS`.
        rate: atrous/sparse rate ``r >= 1`` (sparse needs ``r >= 2``).
        window: local half-width ``w >= 0``; sparse's local part (default ``rate - 1``).
        stride: strided/fixed stride ``l >= 1`` (``rate`` is accepted as an alias).
        summary: fixed pattern's summary size ``1 <= c <= l``.

    Returns:
        Dict of the parameters the pattern uses.

    Raises:
        ValueError: unknown kind, missing or out-of-range parameter.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "full":
        return {}
    if kind == "local":
        if window is None:
            raise ValueError("local pattern needs window (half-width w >= 0)")
        return {"window": check_positive_int(window, "window", 0)}
    if kind == "atrous":
        if rate is None:
            raise ValueError("atrous pattern needs rate (r >= 1)")
        return {"rate": check_positive_int(rate, "rate", 1)}
    if kind == "sparse":
        if rate is None:
            raise ValueError("sparse pattern needs rate (r >= 2)")
        rate = check_positive_int(rate, "rate", 2)
        window = rate - 1 if window is None else check_positive_int(window, "window", 0)
        return {"rate": rate, "window": window}
    stride = stride if stride is not None else rate
    if stride is None:
        raise ValueError(f"{kind} pattern needs stride (l >= 1)")
    stride = check_positive_int(stride, "stride", 1)
    if kind == "strided":
        return {"stride": stride}
    summary = check_positive_int(summary, "summary", 1)
    if summary > stride:
        raise ValueError(f"summary must be <= stride={stride}, got {summary}")
    return {"stride": stride, "summary": summary}


def allowed(
    kind: str,
    qpos: torch.Tensor,
    kpos: torch.Tensor,
    *,
    causal: bool = False,
    part: int | None = None,
    **params: Any,
) -> torch.Tensor:
    """Elementwise "may query at ``qpos`` attend key at ``kpos``" (broadcasting integer tensors).

    Args:
        kind: one of :data:`KINDS`.
        qpos: integer tensor of query positions.
        kpos: integer tensor of key positions, broadcastable with ``qpos``.
        causal: additionally require ``kpos <= qpos``.
        part: for ``strided``/``fixed``: ``0`` (:math:`A^{(1)}`), ``1`` (:math:`A^{(2)}`) or
            ``None`` (their union).
        **params: the pattern's hyper-parameters (see :func:`resolve_params`).

    Returns:
        Bool tensor of the broadcast shape.
    """
    p = resolve_params(kind, **params)
    d = qpos - kpos
    if kind == "full":
        ok = torch.ones_like(d, dtype=torch.bool)
    elif kind == "atrous":
        ok = d.remainder(p["rate"]) == 0
    elif kind == "local":
        ok = d.abs() <= p["window"]
    elif kind == "sparse":
        ok = (d.abs() <= p["window"]) | (d.remainder(p["rate"]) == 0)
    else:
        stride = p["stride"]
        if kind == "strided":
            a1 = d.abs() <= stride - 1
            a2 = d.remainder(stride) == 0
        else:
            a1 = torch.div(qpos, stride, rounding_mode="floor") == torch.div(
                kpos, stride, rounding_mode="floor"
            )
            a2 = (kpos.remainder(stride) >= stride - p["summary"]) & torch.ones_like(
                d, dtype=torch.bool
            )
        if part not in (None, 0, 1):
            raise ValueError(f"part must be None, 0 or 1, got {part!r}")
        ok = a1 if part == 0 else a2 if part == 1 else a1 | a2
    if causal:
        ok = ok & (d >= 0)
    return ok


def decode_retention(
    kind: str, **params: Any
) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """Which past keys a causal decoder still needs: ``(window, keep)``.

    After the queries ``0 .. T-1`` have been answered, key ``j < T`` is attended by a later causal
    query ``t' >= T`` (some head) iff ``j >= T - window`` or ``keep(j)``:

    * full, atrous(r), sparse(r, w), strided(l): ``keep`` is always True (the residue class of
      ``t' = j + m r`` sweeps every key; window ``0``, ``w``, ``l - 1`` for the local parts);
    * local(w): window ``w``, ``keep`` never (the last ``w`` keys);
    * fixed(l, c): window ``l - 1`` (covers the current block), ``keep(j) = j mod l >= l - c``
      (the summary columns).

    Args:
        kind: one of :data:`KINDS`.
        **params: the pattern's hyper-parameters (see :func:`resolve_params`).

    Returns:
        ``window >= 0`` and ``keep(pos (s,) long) -> (s,) bool``.
    """
    p = resolve_params(kind, **params)
    if kind == "local":
        return p["window"], lambda pos: torch.zeros_like(pos, dtype=torch.bool)
    if kind == "fixed":
        l, c = p["stride"], p["summary"]
        return l - 1, lambda pos: pos.remainder(l) >= l - c
    window = {"sparse": p.get("window", 0), "strided": p.get("stride", 1) - 1}.get(kind, 0)
    return window, lambda pos: torch.ones_like(pos, dtype=torch.bool)


def pattern_mask(
    kind: str, n: int, *, causal: bool = False, part: int | None = None, **params: Any
) -> torch.Tensor:
    """Dense ``(n, n)`` bool mask of a pattern, ``mask[i, j]`` = query ``i`` may attend key ``j``.

    Args:
        kind: one of :data:`KINDS`.
        n: sequence length.
        causal: keep only ``j <= i``.
        part: strided/fixed sub-pattern (``0``, ``1``) or ``None`` for the union.
        **params: ``rate``, ``window``, ``stride``, ``summary`` as the pattern needs.

    Returns:
        ``(n, n)`` bool tensor (this is O(n^2): reference and pictures only).
    """
    n = check_positive_int(n, "n", 0)
    pos = torch.arange(n)
    return allowed(kind, pos[:, None], pos[None, :], causal=causal, part=part, **params)


def head_parts(kind: str, num_heads: int) -> list[int | None]:
    """Which sub-pattern each head uses: strided/fixed split the heads, first ``h - h // 2`` heads
    get part 0 and the last ``h // 2`` get part 1; other kinds use the whole pattern (``None``)."""
    if kind in ("strided", "fixed"):
        h1 = num_heads - num_heads // 2
        return [0] * h1 + [1] * (num_heads - h1)
    return [None] * num_heads


def head_pattern_masks(
    kind: str, n: int, num_heads: int, *, causal: bool = False, **params: Any
) -> torch.Tensor:
    """Per-head dense masks ``(h, n, n)`` exactly as the kernels in
    :mod:`kexue.attention.functional` implement them (strided/fixed split the heads)."""
    return torch.stack(
        [
            pattern_mask(kind, n, causal=causal, part=p, **params)
            for p in head_parts(kind, num_heads)
        ]
    )


def pattern_picture(
    kind: str, n: int = 16, *, causal: bool = False, part: int | None = None, **params: Any
) -> torch.Tensor:
    """An article-style picture of a pattern as data: row = query i, column = key j.

    Args:
        kind: one of :data:`KINDS`.
        n: sequence length (small, e.g. 16).
        causal: causal variant.
        part: strided/fixed sub-pattern; ``None`` gives the union with the two parts told apart.
        **params: pattern hyper-parameters.

    Returns:
        ``(n, n)`` long tensor: 0 = not attended, 1 = attended (strided/fixed union: by heads A1),
        2 = attended by heads A2 only. Draw it with :func:`kexue.report.plots.mask_images`.
    """
    if kind in ("strided", "fixed") and part is None:
        a1 = pattern_mask(kind, n, causal=causal, part=0, **params)
        a2 = pattern_mask(kind, n, causal=causal, part=1, **params)
        return torch.where(a1, 1, torch.where(a2, 2, 0)).long()
    return pattern_mask(kind, n, causal=causal, part=part, **params).long()


def pattern_title(kind: str, *, causal: bool = False, **params: Any) -> str:
    """``"local(window=3) causal"``: the pattern and its resolved parameters, for captions."""
    ps = ", ".join(f"{k}={v}" for k, v in resolve_params(kind, **params).items())
    return f"{kind}({ps})" + (" causal" if causal else "")
