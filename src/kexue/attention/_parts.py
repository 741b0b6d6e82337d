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

Atrous residue classes are gathered a few classes at a time (``index_select``, a chunk-sized
copy), never as a reshaped copy of the whole of ``q, k, v``: the extra memory of every pattern
is ``out``, the gradients and a few chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kexue.attention._tiles import (
    TilePlan,
    backward_acc,
    forward_autograd,
    forward_no_grad,
    merge_parts,
)

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

    def forward(self, q, k, v, scale):
        """``(out, lse)`` of the part's heads."""
        return forward_no_grad(self.plan, q[:, self.h0 : self.h1], *self._kv(k, v), scale)

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

    def _index(self, g0: int, g1: int):
        """``idx (g m,)`` positions of classes ``g0..g1`` (padding clipped to ``n - 1``) and
        ``ok (g, m)`` (False = padding)."""
        dev = self.key_valid.device
        pos = torch.arange(g0, g1, device=dev)[:, None] + self.rate * torch.arange(
            self.m, device=dev
        )
        ok = pos < self.n
        return pos.clamp_max(self.n - 1).flatten(), ok

    def _plan(self, b: int, g: int, ok: torch.Tensor, idx: torch.Tensor) -> TilePlan:
        hp, m = self.h1 - self.h0, self.m
        kv = self.key_valid[:, idx].view(b, g, m) & ok  # (b, g, m)
        kv = kv[:, None].expand(b, hp, g, m).reshape(b, hp * g, m)  # heads outer, classes inner
        block = max(1, min(self.block, m))
        pred = (lambda qi, kj: kj <= qi) if self.causal else None
        return TilePlan(
            block=block, tiles=-(-m // block), n_q=m, n_k=m, key_len=m, key_valid=kv, full=True,
            pred=pred, kpos=torch.arange(m, device=idx.device),
        )  # fmt: skip

    def _gather(self, x: torch.Tensor, idx: torch.Tensor, g: int) -> torch.Tensor:
        """``(b, H, n, *)`` -> ``(b, hp g, m, *)`` rows of the chunk's classes (a copy)."""
        x = x[:, self.h0 : self.h1].index_select(2, idx)  # (b, hp, g m, *)
        return x.reshape(x.shape[0], -1, self.m, *x.shape[3:])

    def _scatter(self, dst, val, idx, ok, add: bool) -> None:
        """Write/add ``val (b, hp g, m, *)`` at the classes' positions of ``dst (b, hp, n, *)``
        (the part's heads)."""
        val = val.reshape(*dst.shape[:2], -1, *val.shape[3:])
        okf = ok.flatten()
        if not bool(okf.all()):
            val, idx = val[:, :, okf], idx[okf]
        dst.index_add_(2, idx, val) if add else dst.index_copy_(2, idx, val)

    def forward(self, q, k, v, scale):
        b, hp = q.shape[0], self.h1 - self.h0
        out = q.new_empty(b, hp, self.n, v.shape[-1])
        lse = q.new_empty(b, hp, self.n)
        for g0, g1 in self._chunks(b, q.shape[-1]):
            idx, ok = self._index(g0, g1)
            plan = self._plan(b, g1 - g0, ok, idx)
            qc, kc, vc = (self._gather(x, idx, g1 - g0) for x in (q, k, v))
            o, lo = forward_no_grad(plan, qc, kc, vc, scale)
            self._scatter(out, o, idx, ok, add=False)
            self._scatter(lse, lo, idx, ok, add=False)
        return out, lse

    def backward(self, q, k, v, out, lse, dout, dlse, scale, dq, dk, dv) -> None:
        b = q.shape[0]
        for g0, g1 in self._chunks(b, q.shape[-1]):
            idx, ok = self._index(g0, g1)
            g = g1 - g0
            plan = self._plan(b, g, ok, idx)
            qc, kc, vc = (self._gather(x, idx, g) for x in (q, k, v))
            oc, lc, doc = (self._gather(x, idx, g) for x in (out, lse, dout))
            dlc = None if dlse is None else self._gather(dlse, idx, g)
            if not bool(ok.all()):  # padding rows copy query n - 1: they must not send gradient
                doc.view(b, -1, g, self.m, doc.shape[-1]).mul_(ok[:, :, None])
                if dlc is not None:
                    dlc.view(b, -1, g, self.m).mul_(ok)
            gq, gk, gv = (torch.zeros_like(x) for x in (qc, kc, vc))
            backward_acc(plan, qc, kc, vc, oc, lc, doc, dlc, scale, gq, gk, gv)
            for dst, val in ((dq, gq), (dk, gk), (dv, gv)):
                self._scatter(dst[:, self.h0 : self.h1], val, idx, ok, add=True)

    def autograd(self, q, k, v, scale, dropout_p):
        idx, ok = self._index(0, self.rate)
        plan = self._plan(q.shape[0], self.rate, ok, idx)
        o, lo = forward_autograd(
            plan, *(self._gather(x, idx, self.rate) for x in (q, k, v)), scale, dropout_p
        )
        okf = ok.flatten()
        b, hp = q.shape[0], self.h1 - self.h0
        o = o.reshape(b, hp, -1, o.shape[-1])[:, :, okf]
        lo = lo.reshape(b, hp, -1)[:, :, okf]
        pos = idx[okf]
        out = o.new_zeros(b, hp, self.n, o.shape[-1]).index_copy(2, pos, o)
        return out, lo.new_zeros(b, hp, self.n).index_copy(2, pos, lo)


def _merge_into(out, lse, o, lo) -> None:
    """In place ``(out, lse) <- union of (out, lse) and (o, lo)`` (module docstring)."""
    new = torch.logaddexp(lse, lo)
    safe = new.masked_fill(new == -math.inf, 0.0)
    out.mul_((lse - safe).exp_().unsqueeze(-1)).addcmul_(o, (lo - safe).exp_().unsqueeze(-1))
    lse.copy_(new)


def _covers(parts, h: int) -> bool:
    return len(parts) == 1 and parts[0].h0 == 0 and parts[0].h1 == h


def union_forward(parts, q, k, v, scale):
    """``(out (b, h, n, e_v), lse (b, h, n))`` of the union, no graph."""
    b, h, n = q.shape[:3]
    with torch.no_grad():
        if _covers(parts, h):
            return parts[0].forward(q, k, v, scale)
        out = q.new_zeros(b, h, n, v.shape[-1])
        lse = q.new_full((b, h, n), -math.inf)
        for part in parts:
            o, lo = part.forward(q, k, v, scale)
            hs = slice(part.h0, part.h1)
            _merge_into(out[:, hs], lse[:, hs], o, lo)
            del o, lo
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
            dout = torch.zeros_like(out)
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        lse = lse.masked_fill(lse == -math.inf, 0.0)  # rows without keys: P = 0
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
