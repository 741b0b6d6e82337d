r"""Interior band tiles: PyTorch's fused CPU flash-attention forward, a batched-GEMM backward.

For the band layout of :mod:`._tiles` (query block ``c`` sees key blocks ``c - L .. c + R``), the
interior tiles ``L <= c < C - R`` need no padding, and their key tiles are an overlapping
``unfold`` view of the key sequence: shape ``(h, c, T, e)``, strides ``(., B e, e, 1)``.

* **Forward.** The CPU kernel ``aten::_scaled_dot_product_flash_attention_for_cpu`` reads its
  inputs through their strides, so it takes these views as a batch of ``h`` "batches" x ``c``
  "heads" of length ``B`` (queries) and ``T`` (keys), with the tile's static mask as an additive
  ``(1, 1, B, T)`` bias, and returns the output and the log-normaliser :math:`\ell` the union
  softmax needs.
* **Backward** (:func:`backward`): strided ``baddbmm_`` on the same views, accumulating straight
  into ``dq``/``dk``/``dv``. PyTorch's fused backward was 1.6x slower here: it returns zero-filled
  per-tile key gradients ``(h, c, T, e)`` (``T / B`` times the rows) that had to be folded back.

Used when it applies: CPU, float32/float64, value size = key size, no key padding, every tile
row has an allowed key, no attention dropout. Border tiles keep the generic path.
"""

from __future__ import annotations

import math

import torch

# Forward: elements of one fused call's output (h * c * B * e, 2 MiB in float32; the key tiles are
# never copied). Backward: elements of each of its two reused score buffers (c * B * T, 2 MiB).
FORWARD_ELEMENTS = 1 << 19
# Atrous classes: elements of one call's q rows (h * g * m * e). Its backward allocates three
# gradients of that size (zero-filled), so this sets the temporary memory of the class path.
CLASS_ELEMENTS = 1 << 17
BACKWARD_ELEMENTS = 1 << 19
USE_FUSED = True  # False: every tile takes the generic path of ._tiles (tests compare the two)
OP_NAMES = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
)
# (forward, backward) once probed, False when missing or not behaving as this module expects;
# looked up lazily so that a torch that renames or changes them still imports kexue.attention
# (every tile then takes the generic path)
_OPS: tuple | bool | None = None


def lookup_ops(names: tuple[str, str] = OP_NAMES) -> tuple | None:
    """The private aten ops ``names`` if they exist and compute what this module expects on
    a tiny probe (forward output and log-sum-exp against a dense softmax, backward against
    autograd), else ``None``."""
    try:
        with torch.inference_mode(False), torch.enable_grad():  # first use may be in no_grad
            return _probe(*(getattr(torch.ops.aten, n) for n in names))
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _probe(fwd, bwd) -> tuple | None:
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(4))
    o, lse = fwd(q, k, v, scale=0.5)
    gq, gk, gv = bwd(do, q, k, v, o, lse, 0.0, False, scale=0.5)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    s = (qr @ kr.transpose(-1, -2)) * 0.5
    ref = s.softmax(-1) @ vr
    ref.backward(do)
    ok = (
        torch.allclose(o, ref.detach(), atol=1e-10)
        and torch.allclose(lse, s.detach().logsumexp(-1), atol=1e-10)
        and all(torch.allclose(a, b.grad, atol=1e-10) for a, b in ((gq, qr), (gk, kr), (gv, vr)))
    )
    return (fwd, bwd) if ok else None


def _ops() -> tuple | None:
    global _OPS
    if _OPS is None:
        _OPS = lookup_ops() or False
    return _OPS or None


def _FWD(*args, **kwargs):  # noqa: N802 - the op's stand-in
    return _ops()[0](*args, **kwargs)


def _BWD(*args, **kwargs):  # noqa: N802
    return _ops()[1](*args, **kwargs)


def _kernel_takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """The fused CPU kernel's needs: the ops exist and behave (probed once), CPU, float32/64,
    one head size, contiguous rows."""
    return (
        USE_FUSED
        and q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64)
        and v.shape[-1] == q.shape[-1]
        and all(x.stride(-1) == 1 for x in (q, k, v))
        and _ops() is not None
    )


def interior(plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int] | None:
    """Tile range ``(c0, c1)`` the fused kernel can take for ``plan`` on ``q, k, v``, or None."""
    if plan.full or not _kernel_takes(q, k, v):
        return None
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


def _steps(plan, h: int, e: int, c0: int, c1: int):
    per = max(1, FORWARD_ELEMENTS // max(1, h * plan.block * e))
    return [(a, min(a + per, c1)) for a in range(c0, c1, per)]


def forward(plan, q, k, v, scale: float, out, lse, c0: int, c1: int) -> None:
    """Fill rows of blocks ``c0..c1`` of ``out (b, h, n, e_v)`` and ``lse (b, h, n)``."""
    bias = _bias(plan, q.dtype)
    for bi in range(q.shape[0]):
        for a, z in _steps(plan, q.shape[1], q.shape[-1], c0, c1):
            o, lo = _FWD(
                _q_view(plan, q[bi], a, z), _k_view(plan, k[bi], a, z), _k_view(plan, v[bi], a, z),
                attn_mask=bias, scale=scale,
            )  # fmt: skip
            rows = slice(a * plan.block, z * plan.block)
            out[bi, :, rows].copy_(o.flatten(1, 2))
            lse[bi, :, rows].copy_(lo.flatten(1, 2))


def backward(
    plan, q, k, v, out, lse, dout, dlse, scale: float, dq, dk, dv, c0: int, c1: int
) -> None:
    r"""Add the gradients of query blocks ``c0..c1`` into ``dq, dk, dv`` (``out``/``lse`` of the
    union; ``dlse`` may be None).

    Strided batched GEMMs on the overlapping key-tile views, per head and chunk of blocks, into
    two reused score buffers (flash-attention backward, :math:`dS = P \odot (dP - D + d\ell)`):

    .. math::

        P = e^{\alpha Q_c K_c^\top - \ell} \odot M,\quad dP = dO_c V_c^\top,\quad
        dQ_c \mathrel{+}= \alpha\, dS K_c,\quad
        dV_{c+s} \mathrel{+}= P_{:,s}^\top dO_c,\quad dK_{c+s} \mathrel{+}= \alpha\, dS_{:,s}^\top Q_c,

    with :math:`P_{:,s}` the ``B`` columns of key block ``c + s - L``. For one ``s`` the blocks
    ``c + s - L`` of a chunk are distinct, so each of those products accumulates straight into a
    ``(c, B, e)`` view of ``dK``/``dV`` (``baddbmm_``): no per-tile key gradients to fold back
    (PyTorch's fused backward returns ``T / B`` times the rows, zero-filled, which cost more than
    its arithmetic here).
    """
    blk, tk, n_s, left = plan.block, plan.tile_keys, plan.left + plan.right + 1, plan.left
    per = max(1, min(c1 - c0, BACKWARD_ELEMENTS // (blk * tk)))
    keep = None if plan.static_ok is None else plan.static_ok.to(q.dtype)  # (B, T) 0/1
    bufs = [q.new_empty(per, blk, tk), q.new_empty(per, blk, tk)]
    bufs += [q.new_empty(per, blk, 1), q.new_empty(per, blk, 1)]
    nq, nk = plan.n_q // blk, plan.n_k // blk  # whole blocks: every interior row lies in them
    # Python overhead is a tenth of this loop's time on 2 threads, so every view that does not
    # change inside a loop is made outside it: per head, tensors as (blocks, B, .) views; per
    # chunk size, the score buffers and their column blocks.
    views: dict[int, tuple] = {}

    def buffers(c: int) -> tuple:
        if c not in views:
            p, dp, d, nl = (x[:c] for x in bufs)
            cols = [(p[:, :, s * blk : (s + 1) * blk].transpose(1, 2),
                     dp[:, :, s * blk : (s + 1) * blk].transpose(1, 2)) for s in range(n_s)]  # fmt: skip
            views[c] = (p, dp, d, nl, cols)
        return views[c]

    def blocks(x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        return x[: n_blocks * blk].view(n_blocks, blk, x.shape[-1])

    for bi in range(q.shape[0]):
        for hi in range(q.shape[1]):
            kh, vh = k[bi, hi], v[bi, hi]
            qb, dob, ob = (blocks(x[bi, hi], nq) for x in (q, dout, out))
            dqb, dkb, dvb = blocks(dq[bi, hi], nq), blocks(dk[bi, hi], nk), blocks(dv[bi, hi], nk)
            lb = blocks(lse[bi, hi, :, None], nq)
            dlb = None if dlse is None else blocks(dlse[bi, hi, :, None], nq)
            for a in range(c0, c1, per):
                z = min(a + per, c1)
                p, dp, d, nl, cols = buffers(z - a)
                qc, do = qb[a:z], dob[a:z]
                keys = slice((a - left) * blk, (z + plan.right) * blk)
                kt = kh[keys].unfold(0, tk, blk)  # (c, e, T): K_c^T per tile, a view
                vt = vh[keys].unfold(0, tk, blk)
                torch.baddbmm(torch.neg(lb[a:z], out=nl), qc, kt, alpha=scale, out=p)  # S - l
                # P = e^(S - l) M. Masking after exp, not with -inf before: exp of -inf (or of
                # anything below about -87) takes a slow path (3-70x); allowed S - l <= 0, and
                # e^-80 ~ 1e-35 is as good as 0, so clamping keeps every argument fast.
                p.clamp_(min=-80.0, max=0.0).exp_()
                if keep is not None:
                    p.mul_(keep)
                torch.sum(do * ob[a:z], -1, keepdim=True, out=d)
                if dlb is not None:
                    d.sub_(dlb[a:z])  # D - dl
                for s, (p_s, _) in enumerate(cols):  # dV of key blocks a + s - L .. z + s - L
                    dvb[a + s - left : z + s - left].baddbmm_(p_s, do)
                torch.baddbmm(d.neg_(), do, vt, out=dp).mul_(p)  # dS (alpha comes below)
                dqb[a:z].baddbmm_(dp, kt.transpose(1, 2), alpha=scale)
                for s, (_, dp_s) in enumerate(cols):
                    dkb[a + s - left : z + s - left].baddbmm_(dp_s, qc, alpha=scale)


# --- atrous residue classes --------------------------------------------------------------------
def classes(part, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dlse=None) -> bool:
    """Whether atrous ``part`` (a :class:`._parts.ClassPart`) can run on the fused kernel: as
    for band tiles, plus ``n`` a multiple of the rate (every class has ``m = n / r`` real rows,
    so the classes are a strided view, no gather) and no gradient through :math:`\\ell`."""
    return (
        dlse is None
        and _kernel_takes(q, k, v)
        and part.n % part.rate == 0
        and bool(part.key_valid.all())
    )


def _class_view(part, x: torch.Tensor, bi: int, heads: bool = True) -> torch.Tensor:
    """``x (b, H, n, *)`` -> ``(hp, r, m, *)`` view of batch ``bi``: class ``c`` row ``i`` is
    position ``i r + c`` (strides ``(., e, r e, 1)``)."""
    x = x[bi, part.h0 : part.h1] if heads else x[bi]
    return x.unflatten(1, (part.n // part.rate, part.rate)).transpose(1, 2)


def _class_steps(part, e: int) -> list[tuple[int, int]]:
    per = max(1, CLASS_ELEMENTS // max(1, (part.h1 - part.h0) * part.n // part.rate * e))
    return [(g0, min(g0 + per, part.rate)) for g0 in range(0, part.rate, per)]


def class_forward(part, q, k, v, scale: float, out, lse) -> None:
    """Fill ``out (b, hp, n, e)`` and ``lse (b, hp, n)`` (the part's heads): full (causal)
    attention inside each residue class, a few classes per call."""
    for bi in range(q.shape[0]):
        qv, kv, vv = (_class_view(part, x, bi) for x in (q, k, v))
        ov, lv = _class_view(part, out, bi, False), _class_view(part, lse[..., None], bi, False)
        for g0, g1 in _class_steps(part, q.shape[-1]):
            o, lo = _FWD(
                qv[:, g0:g1], kv[:, g0:g1], vv[:, g0:g1], is_causal=part.causal, scale=scale
            )
            ov[:, g0:g1].copy_(o)
            lv[:, g0:g1, :, 0].copy_(lo)


def class_backward(part, q, k, v, out, lse, dout, scale: float, dq, dk, dv) -> None:
    """Add the part's gradient share into ``dq, dk, dv`` (all heads; ``out``/``lse`` of the
    union, so :math:`P = e^{S - \\ell}` is the union's probability on the class keys)."""
    for bi in range(q.shape[0]):
        views = [_class_view(part, x, bi) for x in (q, k, v, out, dout, dq, dk, dv)]
        qv, kv, vv, ov, dov, dqv, dkv, dvv = views
        lv = _class_view(part, lse[..., None], bi)[..., 0]
        for g0, g1 in _class_steps(part, q.shape[-1]):
            g = slice(g0, g1)
            gq, gk, gv = _BWD(
                dov[:, g], qv[:, g], kv[:, g], vv[:, g], ov[:, g], lv[:, g].contiguous(),
                0.0, part.causal, scale=scale,
            )  # fmt: skip
            dqv[:, g].add_(gq)
            dkv[:, g].add_(gk)
            dvv[:, g].add_(gv)
