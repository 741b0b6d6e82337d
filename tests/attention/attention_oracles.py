"""Brute-force references for sparse attention: an explicit per-query loop over S(i).

Nothing here imports :mod:`kexue.attention`: the allowed sets are written from their
definitions (design note 01 §2; Child et al. 2019 §4.2-4.3 for strided/fixed), with
``d = i - j`` on 0-based absolute positions:

* full: every ``j``; atrous(r): ``d mod r = 0``; local(w): ``|d| <= w``;
* sparse(r, w = r - 1): ``|d| <= w or d mod r = 0``;
* strided(l): first ``h - h // 2`` heads ``|d| <= l - 1``, last ``h // 2`` heads ``d mod l = 0``;
* fixed(l, c): first heads ``i // l == j // l``, last heads ``j mod l >= l - c``;

and ``causal`` additionally keeps only ``j <= i``.
"""

from __future__ import annotations

import torch


def member(kind, i, j, *, head, num_heads, causal=False, rate=None, window=None, stride=None,
           summary=1):  # fmt: skip
    """Is key ``j`` in S(i) for head ``head`` of ``num_heads``? (plain Python ints)."""
    if causal and j > i:
        return False
    d = i - j
    first_half = head < num_heads - num_heads // 2  # A^(1) heads; the rest use A^(2)
    if kind == "full":
        return True
    if kind == "atrous":
        return d % rate == 0
    if kind == "local":
        return abs(d) <= window
    if kind == "sparse":
        w = rate - 1 if window is None else window
        return abs(d) <= w or d % rate == 0
    if kind == "strided":
        return abs(d) <= stride - 1 if first_half else d % stride == 0
    if kind == "fixed":
        return i // stride == j // stride if first_half else j % stride >= stride - summary
    raise ValueError(f"unknown pattern {kind!r}")


def loop_attention(q, k, v, kind, *, causal=False, key_padding_mask=None, scale=None, **params):
    """For every (b, h, i): build S(i) = {j : allowed and key valid} and softmax over it.

    Each key appears at most once in S(i) by construction (a Python set), so this catches double
    counting in the union (the bug of the original Keras Sparse layer).
    """
    b, h, n, e = q.shape
    scale = e**-0.5 if scale is None else scale
    out = torch.zeros(b, h, n, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                keys = sorted(
                    {
                        j
                        for j in range(n)
                        if member(kind, i, j, head=hi, num_heads=h, causal=causal, **params)
                        and (key_padding_mask is None or bool(key_padding_mask[bi, j]))
                    }
                )
                if not keys:
                    continue
                s = torch.stack([q[bi, hi, i] @ k[bi, hi, j] * scale for j in keys])
                p = torch.softmax(s, 0)
                out[bi, hi, i] = sum(p[t] * v[bi, hi, j] for t, j in enumerate(keys))
    return out


def dense_probs(q, k, kind, *, causal=False, key_padding_mask=None, scale=None, **params):
    """``(b, h, n, n)`` attention probabilities over S(i) (rows without keys are zero)."""
    b, h, n, e = q.shape
    scale = e**-0.5 if scale is None else scale
    ok = torch.tensor(
        [
            [[member(kind, i, j, head=hi, num_heads=h, causal=causal, **params) for j in range(n)]
             for i in range(n)]
            for hi in range(h)
        ]
    )[None]  # fmt: skip
    if key_padding_mask is not None:
        ok = ok & key_padding_mask[:, None, None, :]
    s = (q @ k.transpose(-1, -2) * scale).masked_fill(~ok, float("-inf"))
    has = ok.any(-1, keepdim=True)
    return torch.softmax(s.masked_fill(~has, 0.0), -1) * has
