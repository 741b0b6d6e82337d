r"""Band tiles through PyTorch's fused CPU flash-attention kernel (no copy of the keys).

For the band layout of :mod:`._tiles` (query block ``c`` sees key blocks ``c - L .. c + R``), the
interior tiles ``L <= c < C - R`` need no padding, and their key tiles are an overlapping
``unfold`` view of the key sequence: shape ``(h, c, T, e)``, strides ``(., B e, e, 1)``. The CPU
kernel ``aten::_scaled_dot_product_flash_attention_for_cpu`` reads its inputs through their
strides, so it takes these views as a batch of ``h`` "batches" x ``c`` "heads" of length ``B``
(queries) and ``T`` (keys), with the tile's static mask as an additive ``(1, 1, B, T)`` bias, and
returns the output and the log-normaliser :math:`\ell` the union softmax needs. Its backward takes
the union's ``out`` and :math:`\ell` (the same :math:`dS = P \odot (dP - D)` as
:func:`._tiles.backward_acc`) and returns per-tile key gradients ``(h, c, T, e)``, which are
folded back block by block.

Used when it applies: CPU, float32/float64, value size = key size, no key padding, every tile row has an allowed key,
no attention dropout, no gradient through :math:`\ell`. Vectorised exp and one parallel region
per call (it also uses every thread it is given). Border tiles keep the generic path.
"""

from __future__ import annotations

import math

import torch

# Elements of one call's output (forward: h * c * B * e, 2 MiB in float32; the key tiles are never
# copied) or of its key gradient (backward: h * c * T * e, 512 KiB: the kernel returns key grads
# per tile, T / B times the rows). Larger backward chunks ran faster (fewer calls) but put
# local(64)'s fwd+bwd peak at n = 4096 level with SDPA full's; this size keeps a margin (the
# table of benchmarks/attention.py shows both).
FORWARD_ELEMENTS = 1 << 19
BACKWARD_ELEMENTS = 1 << 17
USE_FUSED = True  # False: every tile takes the generic path of ._tiles (tests compare the two)
_FWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_BWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def interior(plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int] | None:
    """Tile range ``(c0, c1)`` the fused kernel can take for ``plan`` on ``q, k, v``, or None."""
    if (
        not USE_FUSED
        or plan.full
        or q.device.type != "cpu"
        or q.dtype not in (torch.float32, torch.float64)
    ):
        return None
    if v.shape[-1] != q.shape[-1] or any(x.stride(-1) != 1 for x in (q, k, v)):
        return None  # the kernel needs one head size and contiguous rows
    if plan.static_ok is not None and not bool(plan.static_ok.any(-1).all()):
        return None  # a row without keys: the fused kernel would give NaN
    c0 = plan.left
    c1 = min(plan.tiles - plan.right, plan.n_q // plan.block)  # full query blocks only
    c1 = min(c1, plan.n_k // plan.block - plan.right)  # key blocks c + R must exist
    if c1 - c0 < 1:
        return None
    span = plan.key_valid[:, :, c0 * plan.block : (c1 + plan.left + plan.right) * plan.block]
    return (c0, c1) if bool(span.all()) else None  # key padding: generic path


def _bias(plan, dtype) -> torch.Tensor | None:
    if plan.static_ok is None:
        return None
    bias = torch.zeros(plan.static_ok.shape, dtype=dtype, device=plan.static_ok.device)
    return bias.masked_fill_(~plan.static_ok, -math.inf)[None, None]  # (1, 1, B, T)


def _q_view(plan, x: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
    """``(h, n, e)`` -> ``(h, c, B, e)`` rows of blocks ``c0..c1`` (a view)."""
    return x[:, c0 * plan.block : c1 * plan.block].unflatten(1, (c1 - c0, plan.block))


def _k_view(plan, x: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
    """``(h, n, e)`` -> ``(h, c, T, e)`` overlapping key tiles of blocks ``c0..c1`` (a view)."""
    span = x[:, (c0 - plan.left) * plan.block : (c1 + plan.right) * plan.block]
    return span.unfold(1, plan.tile_keys, plan.block).transpose(-1, -2)


def _steps(plan, h: int, e: int, c0: int, c1: int, rows: int, elements: int):
    per = max(1, elements // max(1, h * rows * e))
    return [(a, min(a + per, c1)) for a in range(c0, c1, per)]


def forward(plan, q, k, v, scale: float, out, lse, c0: int, c1: int) -> None:
    """Fill rows of blocks ``c0..c1`` of ``out (b, h, n, e_v)`` and ``lse (b, h, n)``."""
    bias = _bias(plan, q.dtype)
    for bi in range(q.shape[0]):
        for a, z in _steps(plan, q.shape[1], q.shape[-1], c0, c1, plan.block, FORWARD_ELEMENTS):
            o, lo = _FWD(
                _q_view(plan, q[bi], a, z), _k_view(plan, k[bi], a, z), _k_view(plan, v[bi], a, z),
                attn_mask=bias, scale=scale,
            )  # fmt: skip
            rows = slice(a * plan.block, z * plan.block)
            out[bi, :, rows].copy_(o.flatten(1, 2))
            lse[bi, :, rows].copy_(lo.flatten(1, 2))


def backward(plan, q, k, v, out, lse, dout, scale: float, dq, dk, dv, c0: int, c1: int) -> None:
    """Add the gradients of blocks ``c0..c1`` into ``dq, dk, dv`` (``lse`` of the union)."""
    bias, blk = _bias(plan, q.dtype), plan.block
    for bi in range(q.shape[0]):
        steps = _steps(plan, q.shape[1], q.shape[-1], c0, c1, plan.tile_keys, BACKWARD_ELEMENTS)
        for a, z in steps:
            qv = _q_view(plan, q[bi], a, z)
            gq, gk, gv = _BWD(
                _q_view(plan, dout[bi], a, z), qv, _k_view(plan, k[bi], a, z),
                _k_view(plan, v[bi], a, z), _q_view(plan, out[bi], a, z),
                _q_view(plan, lse[bi][..., None], a, z)[..., 0].contiguous(), 0.0, False,
                attn_mask=bias, scale=scale,
            )  # fmt: skip
            dq[bi, :, a * blk : z * blk].add_(gq.flatten(1, 2))
            for s in range(plan.left + plan.right + 1):  # fold tile key grads back per block
                lo = (a + s - plan.left) * blk
                rows = slice(lo, lo + (z - a) * blk)
                dk[bi, :, rows].view(gq.shape).add_(gk[:, :, s * blk : (s + 1) * blk])
                dv[bi, :, rows].view(gq.shape[:-1] + gv.shape[-1:]).add_(
                    gv[:, :, s * blk : (s + 1) * blk]
                )
