r"""Tiled attention kernel: queries in blocks of ``B``, each block scored against one key tile.

For a query block :math:`Q_c \in \mathbb{R}^{B\times e}` and its key tile :math:`K_c, V_c \in
\mathbb{R}^{T\times e}` with an allowed-mask :math:`M_c \in \{0,1\}^{B\times T}`:

.. math::

    S = \alpha Q_c K_c^\top + \log M_c,\quad
    \ell = \operatorname{logsumexp}_j S_{:j},\quad
    O_c = e^{S - \ell} V_c .

Two tile layouts cover every pattern in :mod:`kexue.attention.functional`:

* **band**: tile ``c`` is the keys of blocks ``c - left .. c + right`` (an overlapping ``unfold``
  view of the key sequence padded by ``left``/``right`` blocks), and the mask inside a tile is the
  same for every tile (shift-invariant patterns: local window, the local part of sparse,
  the block-diagonal part of ``fixed``). Cost :math:`O(n \cdot (left+right+1) B)`.
* **full**: every tile sees all ``N_k`` keys, the mask is a predicate of absolute positions
  (the residue classes of atrous/sparse, the summary columns of ``fixed``).

Both return the normalised output *and* the log-normaliser :math:`\ell`, so several parts can be
merged into one softmax over their union (:func:`merge_parts`) without counting a key twice.

Nothing keeps a score tile: :func:`forward_no_grad` processes a few tiles at a time, and the
autograd function of :mod:`._parts` saves only ``q, k, v, out, lse``; :func:`backward_acc`
recomputes :math:`P = e^{S-\ell}` tile by tile
(flash-attention style) with :math:`dS = P \odot (dP - D + d\ell)`, :math:`D = \mathrm{rowsum}(dO
\odot O)`. Peak extra memory is therefore O(n e) plus one chunk of tiles. Attention dropout
uses a plain-autograd path instead (same maths, keeps the probabilities).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kexue.attention import _flash
from kexue.core.buffers import fresh_empty

# Elements of one chunk of score tiles (b * h * tiles * B * T): 512 KiB in float32. Smaller chunks are
# cache-friendlier, larger ones start fewer parallel regions (costly on an oversubscribed CPU).
CHUNK_ELEMENTS = 1 << 17


@dataclass
class TilePlan:
    """How query blocks meet key tiles (see the module docstring).

    Attributes:
        block: query block size ``B``; queries are virtually zero-padded to ``tiles * B``.
        tiles: number of query blocks ``C``.
        n_q: number of (real) query rows.
        n_k: number of (real) key rows.
        key_len: keys in tile coordinates: band ``(tiles + left + right) * B`` (real key ``j``
            sits at ``j + left * B``, the rest is virtual zero padding, never copied), full ``n_k``.
        key_valid: ``(b, g, key_len)`` bool, ``g`` = 1 or the head count; False = padding.
        full: layout "full" (all keys per tile) instead of "band".
        left: band: number of key blocks before the query block.
        right: band: number of key blocks after it.
        static_ok: band: ``(B, T)`` bool mask shared by every tile.
        pred: full: ``pred(qpos, kpos) -> bool`` on absolute positions, or None (all allowed).
        kpos: full: ``(N_k,)`` positions of the keys (compared with query positions by ``pred``).
    """

    block: int
    tiles: int
    n_q: int
    n_k: int
    key_len: int
    key_valid: torch.Tensor
    full: bool = False
    left: int = 0
    right: int = 0
    static_ok: torch.Tensor | None = None
    pred: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    kpos: torch.Tensor | None = None

    @property
    def tile_keys(self) -> int:
        """``T``: keys per tile."""
        return self.key_len if self.full else (self.left + self.right + 1) * self.block

    def chunks(
        self, b: int, h: int, skip: tuple[int, int] | None = None
    ) -> list[tuple[int, int, int, int]]:
        """``(h0, h1, c0, c1)`` ranges of heads and query blocks processed together, so that one
        chunk of scores holds about :data:`CHUNK_ELEMENTS` numbers (cache-sized, bounded memory);
        query blocks ``skip[0] .. skip[1]`` are left out (done by the interior path of ._flash)."""
        segs = [(0, self.tiles)] if skip is None else [(0, skip[0]), (skip[1], self.tiles)]
        out = []
        for a, z in segs:
            if z <= a:
                continue
            per_head = b * (z - a) * self.block * self.tile_keys
            if per_head <= CHUNK_ELEMENTS:
                hc = max(1, CHUNK_ELEMENTS // per_head)
                out += [(h0, min(h0 + hc, h), a, z) for h0 in range(0, h, hc)]
                continue
            per = max(1, CHUNK_ELEMENTS // (b * self.block * self.tile_keys))
            out += [
                (h0, h0 + 1, c0, min(c0 + per, z)) for h0 in range(h) for c0 in range(a, z, per)
            ]
        return out

    def heads(self, h0: int, h1: int) -> TilePlan:
        """The plan restricted to heads ``h0..h1`` (slices a per-head ``key_valid``)."""
        if self.key_valid.shape[1] == 1:
            return self
        return dataclasses.replace(self, key_valid=self.key_valid[:, h0:h1])

    # --- tiles ---------------------------------------------------------------------------
    def q_tile(self, x: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        """``(b, h, n_q, *)`` -> ``(b, h, c, B, *)`` query rows of blocks ``c0..c1`` (zero rows
        past ``n_q``)."""
        return _rows(x, c0 * self.block, c1 * self.block).unflatten(2, (c1 - c0, self.block))

    def put_q(
        self, dst: torch.Tensor, val: torch.Tensor, c0: int, c1: int, add: bool = False
    ) -> None:
        """Write (``add``: add) per-tile rows ``val (b, h, c, B, *)`` into ``dst (b, h, n_q, *)``
        (drop padding)."""
        lo = c0 * self.block
        hi = min(c1 * self.block, self.n_q)
        rows = val.flatten(2, 3)[:, :, : hi - lo]
        dst[:, :, lo:hi].add_(rows) if add else dst[:, :, lo:hi].copy_(rows)

    def k_tile_t(self, x: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        """Keys transposed per tile: band ``(b, h, c, e, T)``, full ``(b, h, 1, e, n_k)``."""
        if self.full:
            return x.transpose(-1, -2).unsqueeze(2)
        span = _rows(x, (c0 - self.left) * self.block, (c1 + self.right) * self.block)
        return span.unfold(2, self.tile_keys, self.block)

    def add_k(self, dst: torch.Tensor, a: torch.Tensor, x: torch.Tensor, c0: int, c1: int) -> None:
        """``dst (b, h, n_k, e) += a^T x`` per tile, ``a (b, h, c, B, T)``, ``x (b, h, c, B, e)``:
        band tiles overlap, so each of the ``left + right + 1`` key blocks of a tile is done on
        its own (a ``(b, h, c, B, e)`` product, never the ``(b, h, c, T, e)`` one)."""
        if self.full:  # all tiles share the keys: contract over tiles and rows at once
            dst.add_(torch.matmul(a.flatten(2, 3).transpose(-1, -2), x.flatten(2, 3)))
            return
        b, h, c, _, e = x.shape
        blk = self.block
        for s in range(self.left + self.right + 1):
            # keys of block c + s - left, (b, h, c, B, e)
            gs = torch.matmul(a[..., s * blk : (s + 1) * blk].transpose(-1, -2), x)
            lo, hi = (c0 + s - self.left) * blk, (c1 + s - self.left) * blk
            a_, z = max(lo, 0), min(hi, self.n_k)
            if a_ == lo and z == hi:
                dst[:, :, lo:hi].view(b, h, c, blk, e).add_(gs)
            elif a_ < z:
                dst[:, :, a_:z].add_(gs.reshape(b, h, c * blk, e)[:, :, a_ - lo : z - lo])

    def masked(self, c0: int, c1: int) -> torch.Tensor | None:
        """Bool mask (True = *not* allowed) broadcastable to the score chunk ``(b, h, c, B, T)``."""
        kv = self.key_valid
        if self.full:
            ok = kv[:, :, None, None, :]  # (b, g, 1, 1, N_k)
            extra = None
            if self.pred is not None:
                qpos = torch.arange(c0 * self.block, c1 * self.block, device=kv.device)
                extra = self.pred(qpos.view(c1 - c0, self.block, 1), self.kpos.view(1, 1, -1))
        else:
            span = kv[:, :, c0 * self.block : (c1 + self.left + self.right) * self.block]
            ok = span.unfold(2, self.tile_keys, self.block).unsqueeze(3)  # (b, g, c, 1, T)
            extra = self.static_ok
        if extra is None:
            return None if bool(ok.all()) else ~ok
        return torch.logical_and(ok, extra).logical_not_()


def _rows(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Rows ``lo..hi`` of dim 2 of ``x`` (``(b, h, n, *)``), zeros outside ``[0, n)``; a view when
    inside (no copy of the whole sequence for padding)."""
    n = x.shape[2]
    if lo >= 0 and hi <= n:
        return x[:, :, lo:hi]
    if hi <= 0 or lo >= n:
        return x.new_zeros(*x.shape[:2], hi - lo, *x.shape[3:])
    a, z = max(lo, 0), min(hi, n)
    pad = (a - lo, hi - z) if x.dim() == 3 else (0, 0, a - lo, hi - z)
    return F.pad(x[:, :, a:z], pad)


def _masked_scores(
    plan: TilePlan, qs: torch.Tensor, k: torch.Tensor, c0: int, c1: int, inplace: bool
) -> torch.Tensor:
    """Scores ``qs K^T`` of blocks ``c0..c1`` (``qs (b, h, c, B, e)`` = alpha Q), -inf if masked."""
    s = _tmm(qs, plan.k_tile_t(k, c0, c1))  # (b, h, c, B, T)
    bad = plan.masked(c0, c1)
    if bad is None:
        return s
    return s.masked_fill_(bad, -math.inf) if inplace else s.masked_fill(bad, -math.inf)


def _tmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-tile ``a @ b`` for ``a (b, h, c, B, x)``; ``b (b, h, c|1, x, y)``. Shared keys (tile dim 1)
    become one GEMM over all ``c * B`` rows instead of a broadcast (which would copy ``b``)."""
    if b.shape[2] == 1 and a.shape[2] != 1:
        return torch.matmul(a.flatten(2, 3), b.squeeze(2)).unflatten(2, a.shape[2:4])
    return torch.matmul(a, b)


def _v_tile(plan: TilePlan, v: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
    return plan.k_tile_t(v, c0, c1).transpose(-1, -2)  # (b, h, c|1, T, e)


def _forward_no_grad(plan: TilePlan, q, k, v, scale, out=None, lse=None):
    b, h, nq, _ = q.shape
    out = fresh_empty(q, (b, h, nq, v.shape[-1])) if out is None else out
    lse = q.new_empty(b, h, nq) if lse is None else lse
    tiny = torch.finfo(q.dtype).tiny
    skip = _flash.interior(plan, q, k, v)
    if skip is not None:  # interior band tiles: PyTorch's fused CPU kernel
        _flash.forward(plan, q, k, v, scale, out, lse, *skip)
    for h0, h1, c0, c1 in plan.chunks(b, h, skip):
        pl, hs = plan.heads(h0, h1), slice(h0, h1)
        qs = pl.q_tile(q[:, hs], c0, c1) * scale  # alpha Q, one chunk (stays in cache)
        s = _masked_scores(pl, qs, k[:, hs], c0, c1, inplace=True)
        mx = s.amax(-1, keepdim=True)
        mx = mx.masked_fill_(mx == -math.inf, 0.0)
        p = s.sub_(mx).exp_()  # unnormalised probabilities, 0 where masked
        tot = p.sum(-1, keepdim=True)
        o = _tmm(p, _v_tile(pl, v[:, hs], c0, c1))
        pl.put_q(out[:, hs], o.div_(tot.clamp_min(tiny)), c0, c1)
        pl.put_q(lse[:, hs], (tot.log_() + mx).squeeze(-1), c0, c1)  # -inf: no allowed key
    return out, lse


def forward_no_grad(
    plan: TilePlan,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out (b, h, n_q, e_v)`` and ``lse (b, h, n_q)`` of one plan, chunk by chunk (no graph);
    written into ``out``/``lse`` when given (views are fine)."""
    with torch.no_grad():
        return _forward_no_grad(plan, q, k, v, scale, out, lse)


def backward_acc(plan: TilePlan, q, k, v, out, lse, dout, dlse, scale: float, dq, dk, dv) -> None:
    r"""Add one plan's share of the gradients into ``dq, dk, dv`` (flash-attention backward).

    ``out``/``lse`` are the outputs of the whole softmax this plan is a part of (``lse`` with
    ``-inf`` replaced by 0), so :math:`P = e^{S - \ell}` are the union's probabilities on this
    plan's keys and :math:`dS = P \odot (dP - D + d\ell)`, :math:`D = \mathrm{rowsum}(dO \odot
    O)`. ``dlse`` may be None (log-normaliser unused). All tensors ``(b, h, ., .)`` of the plan's
    heads (views are fine: gradients are added in place).
    """
    b, h = q.shape[:2]
    skip = _flash.interior(plan, q, k, v)
    if skip is not None:  # interior band tiles: batched GEMMs straight into dk/dv views
        _flash.backward(plan, q, k, v, out, lse, dout, dlse, scale, dq, dk, dv, *skip)
    for h0, h1, c0, c1 in plan.chunks(b, h, skip):
        pl, hs = plan.heads(h0, h1), slice(h0, h1)
        qs = pl.q_tile(q[:, hs], c0, c1) * scale  # alpha Q
        p = _masked_scores(pl, qs, k[:, hs], c0, c1, inplace=True)
        p = p.sub_(pl.q_tile(lse[:, hs], c0, c1).unsqueeze(-1)).exp_()  # P (b, h, c, B, T)
        do = pl.q_tile(dout[:, hs], c0, c1)  # (b, h, c, B, e)
        pl.add_k(dv[:, hs], p, do, c0, c1)  # dV += P^T dO
        ds = _tmm(do, pl.k_tile_t(v[:, hs], c0, c1))  # dP = dO V^T
        delta = (do * pl.q_tile(out[:, hs], c0, c1)).sum(-1, keepdim=True)  # D = rowsum(dO O)
        if dlse is not None:
            delta.sub_(pl.q_tile(dlse[:, hs], c0, c1).unsqueeze(-1))  # D - dl (chunk-sized)
        ds.sub_(delta).mul_(p)  # dS = P (dP - D + dl)
        del p, do, delta
        kt = pl.k_tile_t(k[:, hs], c0, c1).transpose(-1, -2)  # (b, h, c|1, T, e)
        pl.put_q(dq[:, hs], _tmm(ds, kt).mul_(scale), c0, c1, add=True)  # dQ += alpha dS K
        pl.add_k(dk[:, hs], ds, qs, c0, c1)  # dK += dS^T (alpha Q)


def forward_autograd(plan: TilePlan, q, k, v, scale, dropout_p):
    """Same maths with autograd (keeps probabilities): used when attention dropout is on."""
    b, h = q.shape[:2]
    tiny = torch.finfo(q.dtype).tiny
    rows_o, rows_l = [], []
    for h0, h1, c0, c1 in plan.chunks(b, h):
        pl, hs = plan.heads(h0, h1), slice(h0, h1)
        s = _masked_scores(pl, pl.q_tile(q[:, hs], c0, c1) * scale, k[:, hs], c0, c1, False)
        mx = s.detach().amax(-1, keepdim=True)
        mx = mx.masked_fill(mx == -math.inf, 0.0)
        p = torch.exp(s - mx)
        tot = p.sum(-1, keepdim=True)
        lse = torch.where(tot > 0, tot.clamp_min(tiny).log() + mx, -math.inf).squeeze(-1)
        p = F.dropout(p / tot.clamp_min(tiny), dropout_p, training=True)
        if c0 == 0:
            rows_o.append([])
            rows_l.append([])
        rows_o[-1].append(_tmm(p, _v_tile(pl, v[:, hs], c0, c1)).flatten(2, 3))
        rows_l[-1].append(lse.flatten(2, 3))
    out = torch.cat([torch.cat(r, 2) for r in rows_o], 1)[:, :, : plan.n_q]
    return out, torch.cat([torch.cat(r, 2) for r in rows_l], 1)[:, :, : plan.n_q]


def merge_parts(
    parts: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One softmax over the union of disjoint key sets, from each set's ``(out, lse)``.

    .. math:: \ell = \log\sum_p e^{\ell_p},\qquad O = \sum_p e^{\ell_p - \ell} O_p .

    Args:
        parts: list of ``(out (b, h, n, e), lse (b, h, n))``.

    Returns:
        ``(out, lse)`` of the union; rows empty in every part give zeros / ``-inf``.
    """
    mx = torch.stack([lse.detach() for _, lse in parts]).amax(0)
    mx = mx.masked_fill(mx == -math.inf, 0.0)  # the result does not depend on mx
    ws = [torch.exp(lse - mx) for _, lse in parts]  # (b, h, n) each
    tot = sum(ws)
    tiny = torch.finfo(tot.dtype).tiny
    inv = (1.0 / tot.clamp_min(tiny)).unsqueeze(-1)
    out = sum(o * (w.unsqueeze(-1) * inv) for (o, _), w in zip(parts, ws, strict=True))
    lse = torch.where(tot > 0, tot.clamp_min(tiny).log() + mx, -math.inf)
    return out, lse
