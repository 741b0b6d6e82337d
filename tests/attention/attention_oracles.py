"""Brute-force references for sparse attention: an explicit per-query loop over S(i)."""

from __future__ import annotations

import torch

from kexue.attention.patterns import allowed, head_parts


def loop_attention(q, k, v, kind, *, causal=False, key_padding_mask=None, scale=None, **params):
    """For every (b, h, i): build S(i) = {j : allowed and key valid} and softmax over it.

    Each key appears at most once in S(i) by construction (a Python set), so this catches double
    counting in the union (the bug of the original Keras Sparse layer).
    """
    b, h, n, e = q.shape
    scale = e**-0.5 if scale is None else scale
    out = torch.zeros(b, h, n, v.shape[-1], dtype=q.dtype)
    parts = head_parts(kind, h)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                keys = sorted(
                    {
                        j
                        for j in range(n)
                        if bool(
                            allowed(
                                kind,
                                torch.tensor(i),
                                torch.tensor(j),
                                causal=causal,
                                part=parts[hi],
                                **params,
                            )
                        )
                        and (key_padding_mask is None or bool(key_padding_mask[bi, j]))
                    }
                )
                if not keys:
                    continue
                s = torch.stack([q[bi, hi, i] @ k[bi, hi, j] * scale for j in keys])
                p = torch.softmax(s, 0)
                out[bi, hi, i] = sum(p[t] * v[bi, hi, j] for t, j in enumerate(keys))
    return out
