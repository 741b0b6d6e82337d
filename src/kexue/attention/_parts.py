r"""One softmax over a union of disjoint key sets ("parts"), with an O(n e) memory backward.

A pattern is a list of parts, each over a range of heads: a tile plan (:mod:`._tiles`: the local
band, a block diagonal, all keys or a subset of them) or the residue classes of atrous attention.
Part :math:`p` gives its own output and log-normaliser :math:`(O_p, \ell_p)`; on shared heads they
merge into the union's softmax (each key counted once, since the parts are disjoint):

.. math:: \ell = \log \sum_p e^{\ell_p},\qquad O = \sum_p e^{\ell_p - \ell} O_p .

Backward (flash-attention style) needs no per-part state: with the union's :math:`O, \ell`, the
part's probabilities are :math:`P = e^{S - \ell}` and :math:`dS = P \odot (dP - D + d\ell)`,
:math:`D = \mathrm{rowsum}(dO \odot O)`, the same formula for every part. So the autograd
function saves only ``q, k, v, out, lse`` and each part recomputes its scores in backward.

Atrous residue classes are a strided view of the positions ``i r + c``. When the rate divides
``n`` (and there is no key padding), PyTorch's fused CPU kernel reads that view directly
(:func:`._flash.class_forward`). Otherwise they are gathered a few classes at a time, copied to
rows one chunk at a time. Neither path makes a reshaped copy of the whole of ``q, k, v``, so the
extra memory of every pattern is ``out``, the gradients and a few chunks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from kexue.attention import _flash
from kexue.attention._tiles import (
    TilePlan,
    backward_acc,
    forward_autograd,
    forward_no_grad,
    merge_parts,
)
from kexue.core.buffers import fresh_empty
from kexue.core.checks import check_positive_int

# Threads inside the kernels (None: torch's setting). The generic path is many small ops, each an
# OpenMP region; with 2+ threads on an oversubscribed machine every region waits for a
# descheduled thread (measured on a busy 2-core box: 2 threads up to 16x slower than 1). On an
# idle machine more threads are faster (local(64) fwd+bwd n=16384, 2 cores: 328 ms with torch's
# 2 threads vs 477 ms pinned to 1), so the default follows torch; set_kernel_threads(1) pins.
KERNEL_THREADS: int | None = None


def set_kernel_threads(n: int | None) -> None:
    """Cap the torch threads used inside kexue's attention kernels at ``n`` (``None``: no cap).

    Outside the kernels the caller's ``torch.get_num_threads()`` is untouched, so a model keeps
    its threads for projections and feed-forward layers. Useful on a shared machine where
    OpenMP's thread team stalls on many small ops; the setting is process-wide (the kernels
    call ``torch.set_num_threads``), so do not combine it with several Python threads running
    torch at once.
    """
    global KERNEL_THREADS
    KERNEL_THREADS = None if n is None else check_positive_int(n, "n", type_error=ValueError)


@contextlib.contextmanager
def kernel_threads() -> Iterator[None]:
    """Run the block with at most :data:`KERNEL_THREADS` torch threads, then restore."""
    n = torch.get_num_threads()
    if KERNEL_THREADS is None or n <= KERNEL_THREADS:
        yield
        return
    torch.set_num_threads(KERNEL_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# Elements of one gathered chunk of residue classes (b * h * g * m * e): 256 KiB in float32 (a
# backward step holds about nine such chunks: q, k, v, out, dout and three gradients).
CLASS_CHUNK_ELEMENTS = 1 << 16


@dataclass
class TilePart:
    """A tile plan over heads ``h0 .. h1``; ``kidx (s,)``: the plan's keys are ``k[:, :, kidx]``
    (a small subset, gathered; None = all keys)."""

    plan: TilePlan
    h0: int
    h1: int
    kidx: torch.Tensor | None = None

    def _kv(self, k, v):
        hs = slice(self.h0, self.h1)
        if self.kidx is None:
            return k[:, hs], v[:, hs]
        return k[:, hs].index_select(2, self.kidx), v[:, hs].index_select(2, self.kidx)

    def forward(self, q, k, v, scale, out=None, lse=None):
        """``(out, lse)`` of the part's heads (written into ``out``/``lse`` when given)."""
        qs = q[:, self.h0 : self.h1]
        return forward_no_grad(self.plan, qs, *self._kv(k, v), scale, out, lse)

    def backward(self, q, k, v, out, lse, dout, dlse, scale, dq, dk, dv) -> None:
        """Add this part's gradient share into ``dq, dk, dv`` (all heads)."""
        hs = slice(self.h0, self.h1)
        ks, vs = self._kv(k, v)
        gk, gv = (dk[:, hs], dv[:, hs]) if self.kidx is None else map(torch.zeros_like, (ks, vs))
        sl = [x[:, hs] if x is not None else None for x in (q, out, lse, dout, dlse)]
        backward_acc(self.plan, sl[0], ks, vs, *sl[1:], scale, dq[:, hs], gk, gv)
        if self.kidx is not None:
            dk[:, hs].index_add_(2, self.kidx, gk)
            dv[:, hs].index_add_(2, self.kidx, gv)

    def autograd(self, q, k, v, scale, dropout_p):
        """Differentiable ``(out, lse)`` with attention dropout."""
        return forward_autograd(
            self.plan, q[:, self.h0 : self.h1], *self._kv(k, v), scale, dropout_p
        )


@dataclass
class ClassPart:
    """Atrous(rate) on heads ``h0 .. h1``: class ``c`` is positions ``c, c + r, ...`` (length
    ``m = ceil(n / r)``, the last entry padding where ``c + (m-1) r >= n``), full (causal)
    attention inside each class. ``key_valid (b, n)``."""

    rate: int
    n: int
    h0: int
    h1: int
    causal: bool
    key_valid: torch.Tensor
    block: int = 64

    @property
    def m(self) -> int:
        return -(-self.n // self.rate)

    def _chunks(self, b: int, e: int) -> list[tuple[int, int]]:
        per = max(1, CLASS_CHUNK_ELEMENTS // max(1, b * (self.h1 - self.h0) * self.m * e))
        return [(g0, min(g0 + per, self.rate)) for g0 in range(0, self.rate, per)]

    def _ok(self, g0: int, g1: int) -> torch.Tensor:
        """``(g, m)`` bool: entry ``i`` of class ``c`` is a real position ``c + i r < n``."""
        dev = self.key_valid.device
        pos = torch.arange(g0, g1, device=dev)[:, None] + self.rate * torch.arange(
            self.m, device=dev
        )
        return pos < self.n

    def _plan(self, b: int, g0: int, g1: int, ok: torch.Tensor) -> TilePlan:
        hp, m, g = self.h1 - self.h0, self.m, g1 - g0
        kv = self._gather(self.key_valid[:, None], g0, g1, heads=False).view(b, g, m) & ok
        kv = kv[:, None].expand(b, hp, g, m).reshape(b, hp * g, m)  # heads outer, classes inner
        block = max(1, min(self.block, m))
        pred = (lambda qi, kj: kj <= qi) if self.causal else None
        return TilePlan(
            block=block, tiles=-(-m // block), n_q=m, n_k=m, key_len=m, key_valid=kv, full=True,
            pred=pred, kpos=torch.arange(m, device=kv.device),
        )  # fmt: skip

    def _grid(self, x: torch.Tensor, g0: int, g1: int) -> torch.Tensor:
        """View ``(b, H, m0, g, *)`` of the first ``m0 = n // r`` rows of classes ``g0..g1``
        (position ``i r + c``) of ``x (b, H, n, *)``."""
        m0 = self.n // self.rate
        return x[:, :, : m0 * self.rate].unflatten(2, (m0, self.rate))[:, :, :, g0:g1]

    def _tail(self, g0: int, g1: int) -> tuple[int, int]:
        """Classes ``g0 .. t1`` have a last, partial row (positions ``m0 r + c < n``)."""
        start = (self.n // self.rate) * self.rate
        return start, min(g1, self.n - start)

    def _gather(self, x: torch.Tensor, g0: int, g1: int, heads: bool = True) -> torch.Tensor:
        """``(b, H, n, *)`` -> ``(b, hp g, m, *)``: the classes as rows (a chunk-sized copy;
        padding entries are zero)."""
        if heads:
            x = x[:, self.h0 : self.h1]
        m0 = self.n // self.rate
        main = self._grid(x, g0, g1).transpose(2, 3)  # (b, hp, g, m0, *)
        if m0 < self.m:
            out = x.new_zeros(*main.shape[:3], self.m, *main.shape[4:])
            out[:, :, :, :m0] = main
            start, t1 = self._tail(g0, g1)
            if t1 > g0:
                out[:, :, : t1 - g0, m0] = x[:, :, start + g0 : start + t1]
        else:
            out = main
        return out.reshape(out.shape[0], -1, self.m, *out.shape[4:])

    def _scatter(self, dst: torch.Tensor, val: torch.Tensor, g0: int, g1: int, add: bool) -> None:
        """Write/add ``val (b, hp g, m, *)`` at the classes' positions of ``dst (b, hp, n, *)``
        (the part's heads)."""
        m0 = self.n // self.rate
        val = val.view(*dst.shape[:2], g1 - g0, self.m, *val.shape[3:])
        main, src = self._grid(dst, g0, g1), val[:, :, :, :m0].transpose(2, 3)
        main.add_(src) if add else main.copy_(src)
        start, t1 = self._tail(g0, g1)
        if m0 < self.m and t1 > g0:
            d, sv = dst[:, :, start + g0 : start + t1], val[:, :, : t1 - g0, m0]
            d.add_(sv) if add else d.copy_(sv)

    def forward(self, q, k, v, scale, out=None, lse=None):
        """``(out, lse)`` of the part's heads (written into ``out``/``lse`` when given)."""
        b, hp = q.shape[0], self.h1 - self.h0
        out = fresh_empty(q, (b, hp, self.n, v.shape[-1])) if out is None else out
        lse = q.new_empty(b, hp, self.n) if lse is None else lse
        if _flash.classes(self, q, k, v):  # n a multiple of r: strided views, fused kernel
            _flash.class_forward(self, q, k, v, scale, out, lse)
            return out, lse
        for g0, g1 in self._chunks(b, q.shape[-1]):
            plan = self._plan(b, g0, g1, self._ok(g0, g1))
            qc, kc, vc = (self._gather(x, g0, g1) for x in (q, k, v))
            o, lo = forward_no_grad(plan, qc, kc, vc, scale)
            self._scatter(out, o, g0, g1, add=False)
            self._scatter(lse, lo, g0, g1, add=False)
        return out, lse

    def backward(self, q, k, v, out, lse, dout, dlse, scale, dq, dk, dv) -> None:
        """Padding entries are zero in every gathered chunk (``dout`` too), so they add nothing."""
        b, hs = q.shape[0], slice(self.h0, self.h1)
        if _flash.classes(self, q, k, v, dlse):
            _flash.class_backward(self, q, k, v, out, lse, dout, scale, dq, dk, dv)
            return
        for g0, g1 in self._chunks(b, q.shape[-1]):
            plan = self._plan(b, g0, g1, self._ok(g0, g1))
            qc, kc, vc = (self._gather(x, g0, g1) for x in (q, k, v))
            oc, lc, doc = (self._gather(x, g0, g1) for x in (out, lse, dout))
            dlc = None if dlse is None else self._gather(dlse, g0, g1)
            gq, gk, gv = (torch.zeros_like(x) for x in (qc, kc, vc))
            backward_acc(plan, qc, kc, vc, oc, lc, doc, dlc, scale, gq, gk, gv)
            for dst, val in ((dq, gq), (dk, gk), (dv, gv)):
                self._scatter(dst[:, hs], val, g0, g1, add=True)

    def autograd(self, q, k, v, scale, dropout_p):
        """Differentiable: gather every class at once (``_gather`` is built from views and
        slice assignments, which autograd follows), attend, put back in position order."""
        r = self.rate
        plan = self._plan(q.shape[0], 0, r, self._ok(0, r))
        o, lo = forward_autograd(
            plan, *(self._gather(x, 0, r) for x in (q, k, v)), scale, dropout_p
        )
        return self._ungather(o), self._ungather(lo)

    def _ungather(self, val: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_gather`` for all classes, differentiably: ``(b, hp r, m, *)`` ->
        ``(b, hp, n, *)`` (class-major rows back to position order, padding dropped)."""
        b, hp, r = val.shape[0], self.h1 - self.h0, self.rate
        grid = val.reshape(b, hp, r, self.m, *val.shape[3:]).transpose(2, 3)  # (b, hp, m, r, *)
        return grid.reshape(b, hp, self.m * r, *val.shape[3:])[:, :, : self.n]


def _merge_into(out, lse, o, lo) -> None:
    """In place ``(out, lse) <- union of (out, lse) and (o, lo)`` (module docstring)."""
    new = torch.logaddexp(lse, lo)
    safe = new.masked_fill(new == -math.inf, 0.0)
    out.mul_((lse - safe).exp_().unsqueeze(-1)).addcmul_(o, (lo - safe).exp_().unsqueeze(-1))
    lse.copy_(new)


def _covers(parts, h: int) -> bool:
    return len(parts) == 1 and parts[0].h0 == 0 and parts[0].h1 == h


def union_forward(parts, q, k, v, scale):
    """``(out (b, h, n, e_v), lse (b, h, n))`` of the union, no graph. The first part on a head
    range writes straight into ``out``; later ones on the same heads are merged in."""
    b, h, n = q.shape[:3]
    with torch.no_grad(), kernel_threads():
        if _covers(parts, h):
            return parts[0].forward(q, k, v, scale)
        out = fresh_empty(q, (b, h, n, v.shape[-1]), zero=True)
        lse = q.new_full((b, h, n), -math.inf)
        done = torch.zeros(h, dtype=torch.bool)
        for part in parts:
            hs = slice(part.h0, part.h1)
            if not bool(done[hs].any()):
                part.forward(q, k, v, scale, out[:, hs], lse[:, hs])
            else:
                o, lo = part.forward(q, k, v, scale)
                _merge_into(out[:, hs], lse[:, hs], o, lo)
                del o, lo
            done[hs] = True
        return out, lse


class _UnionAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, parts, scale):
        out, lse = union_forward(parts, q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.parts, ctx.scale = parts, scale
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None:
            dout = fresh_empty(out, zero=True)
        dq, dk, dv = (fresh_empty(x, zero=True) for x in (q, k, v))
        lse = lse.masked_fill(lse == -math.inf, 0.0)  # rows without keys: P = 0
        with kernel_threads():
            for part in ctx.parts:
                part.backward(q, k, v, out, lse, dout, dlse, ctx.scale, dq, dk, dv)
        return dq, dk, dv, None, None


def union_autograd(parts, q, k, v, scale, dropout_p):
    """Plain-autograd union (attention dropout keeps the probabilities anyway)."""
    b, h, n = q.shape[:3]
    groups: dict[tuple[int, int], list] = {}
    for part in parts:
        groups.setdefault((part.h0, part.h1), []).append(part.autograd(q, k, v, scale, dropout_p))
    outs, lses, at = [], [], 0
    for (h0, h1), got in sorted(groups.items()):
        assert h0 == at, "head ranges must tile 0..h"
        o, lo = merge_parts(got) if len(got) > 1 else got[0]
        outs.append(o)
        lses.append(lo)
        at = h1
    if at < h:  # heads without any part: no key
        outs.append(q.new_zeros(b, h - at, n, v.shape[-1]))
        lses.append(q.new_full((b, h - at, n), -math.inf))
    if len(outs) == 1:
        return outs[0], lses[0]
    return torch.cat(outs, 1), torch.cat(lses, 1)


def run_parts(parts, q, k, v, scale: float, dropout_p: float = 0.0):
    """Attention over the union of ``parts`` on ``q, k, v (b, h, n, e)``.

    Returns:
        ``out (b, h, n, e_v)`` (zeros for rows with no key) and ``lse (b, h, n)`` (``-inf``).
    """
    if dropout_p > 0:
        return union_autograd(parts, q, k, v, scale, dropout_p)
    return _UnionAttention.apply(q, k, v, parts, scale)
