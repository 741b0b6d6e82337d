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

The custom autograd function never keeps a score tile: forward processes a few tiles at a time
and saves only ``q, k, v, out, lse``; backward recomputes :math:`P = e^{S-\ell}` tile by tile
(flash-attention style) with :math:`dS = P \odot (dP - D + d\ell)`, :math:`D = \mathrm{rowsum}(dO
\odot O)`. Peak extra memory is therefore O(n e) plus one chunk of tiles. Attention dropout
uses a plain-autograd path instead (same maths, keeps the probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Elements of one chunk of score tiles (b * h * tiles * B * T); ~8 MiB in float32.
CHUNK_ELEMENTS = 1 << 21


@dataclass
class TilePlan:
    """How query blocks meet key tiles (see the module docstring).

    Attributes:
        block: query block size ``B``; the (padded) query length is ``tiles * B``.
        tiles: number of query blocks ``C``.
        key_len: (padded) key length ``N_k``; band: ``(tiles + left + right) * B``.
        key_valid: ``(b, g, N_k)`` bool, ``g`` = 1 or the head count; False = padding.
        full: layout "full" (all keys per tile) instead of "band".
        left: band: number of key blocks before the query block.
        right: band: number of key blocks after it.
        static_ok: band: ``(B, T)`` bool mask shared by every tile.
        pred: full: ``pred(qpos, kpos) -> bool`` on absolute positions, or None (all allowed).
        kpos: full: ``(N_k,)`` positions of the keys (compared with query positions by ``pred``).
    """

    block: int
    tiles: int
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

    def chunks(self, b: int, h: int) -> list[tuple[int, int]]:
        """Ranges of query blocks processed together (bounded score memory)."""
        per = max(1, CHUNK_ELEMENTS // max(1, b * h * self.block * self.tile_keys))
        return [(c0, min(c0 + per, self.tiles)) for c0 in range(0, self.tiles, per)]

    # --- tiles ---------------------------------------------------------------------------
    def q_tile(self, x: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        """``(b, h, N_q, *)`` -> ``(b, h, c, B, *)`` query rows of blocks ``c0..c1``."""
        return x[:, :, c0 * self.block : c1 * self.block].unflatten(2, (c1 - c0, self.block))

    def k_tile_t(self, x: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        """Keys transposed per tile: band ``(b, h, c, e, T)``, full ``(b, h, 1, e, N_k)``."""
        if self.full:
            return x.transpose(-1, -2).unsqueeze(2)
        span = x[:, :, c0 * self.block : (c1 + self.left + self.right) * self.block]
        return span.unfold(2, self.tile_keys, self.block)

    def add_k(self, dst: torch.Tensor, g: torch.Tensor, c0: int, c1: int) -> None:
        """Scatter-add a per-tile key gradient ``(b, h, c, T, e)`` into ``dst (b, h, N_k, e)``."""
        if self.full:
            dst.add_(g.sum(2))
            return
        b, h, c, _, e = g.shape
        for s in range(self.left + self.right + 1):
            rows = dst[:, :, (c0 + s) * self.block : (c1 + s) * self.block]
            rows.view(b, h, c, self.block, e).add_(g[..., s * self.block : (s + 1) * self.block, :])

    def allowed(self, c0: int, c1: int) -> list[torch.Tensor]:
        """Masks (True = allowed) broadcastable to the score chunk ``(b, h, c, B, T)``."""
        kv = self.key_valid
        if self.full:
            masks = [kv[:, :, None, None, :]]
            if self.pred is not None:
                qpos = torch.arange(c0 * self.block, c1 * self.block, device=kv.device)
                ok = self.pred(qpos.view(c1 - c0, self.block, 1), self.kpos.view(1, 1, -1))
                masks.append(ok)
            return masks
        span = kv[:, :, c0 * self.block : (c1 + self.left + self.right) * self.block]
        masks = [span.unfold(2, self.tile_keys, self.block).unsqueeze(3)]
        if self.static_ok is not None:
            masks.append(self.static_ok)
        return masks


def _masked_scores(
    plan: TilePlan, q: torch.Tensor, k: torch.Tensor, c0: int, c1: int, scale: float, inplace: bool
) -> torch.Tensor:
    s = torch.matmul(plan.q_tile(q, c0, c1), plan.k_tile_t(k, c0, c1))  # (b, h, c, B, T)
    if inplace:
        s.mul_(scale)
        for m in plan.allowed(c0, c1):
            s.masked_fill_(~m, -math.inf)
        return s
    s = s * scale
    for m in plan.allowed(c0, c1):
        s = s.masked_fill(~m, -math.inf)
    return s


def _v_tile(plan: TilePlan, v: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
    return plan.k_tile_t(v, c0, c1).transpose(-1, -2)  # (b, h, c|1, T, e)


def _forward_no_grad(plan: TilePlan, q, k, v, scale):
    b, h, nq, _ = q.shape
    out = q.new_empty(b, h, nq, v.shape[-1])
    lse = q.new_empty(b, h, nq)
    for c0, c1 in plan.chunks(b, h):
        s = _masked_scores(plan, q, k, c0, c1, scale, inplace=True)
        mx = s.amax(-1, keepdim=True)
        mx = mx.masked_fill_(mx == -math.inf, 0.0)
        p = s.sub_(mx).exp_()  # unnormalised probabilities, 0 where masked
        tot = p.sum(-1, keepdim=True)
        o = torch.matmul(p, _v_tile(plan, v, c0, c1))
        plan.q_tile(out, c0, c1).copy_(o.div_(tot.clamp_min(torch.finfo(q.dtype).tiny)))
        plan.q_tile(lse, c0, c1).copy_((tot.log_() + mx).squeeze(-1))  # -inf: no allowed key
    return out, lse


def _acc_keys(plan: TilePlan, dst, a, x, c0, c1) -> None:
    """``dst (b, h, N_k, e) += a^T x`` per tile, ``a (b, h, c, B, T)``, ``x (b, h, c, B, e)``."""
    if plan.full:  # all tiles share the keys: contract over tiles and rows at once
        dst.add_(torch.matmul(a.flatten(2, 3).transpose(-1, -2), x.flatten(2, 3)))
    else:
        plan.add_k(dst, torch.matmul(a.transpose(-1, -2), x), c0, c1)


class _TileAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: TilePlan, scale: float):
        with torch.no_grad():
            out, lse = _forward_no_grad(plan, q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        plan, scale = ctx.plan, ctx.scale
        b, h = q.shape[:2]
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        delta = (dout * out).sum(-1) - dlse  # D - dl, (b, h, N_q)
        lse = lse.masked_fill(lse == -math.inf, 0.0)
        for c0, c1 in plan.chunks(b, h):
            p = _masked_scores(plan, q, k, c0, c1, scale, inplace=True)
            p = p.sub_(plan.q_tile(lse, c0, c1).unsqueeze(-1)).exp_()  # P, (b, h, c, B, T)
            do = plan.q_tile(dout, c0, c1)  # (b, h, c, B, e)
            vt = plan.k_tile_t(v, c0, c1)  # (b, h, c|1, e, T)
            _acc_keys(plan, dv, p, do, c0, c1)  # dV += P^T dO
            ds = torch.matmul(do, vt).sub_(plan.q_tile(delta, c0, c1).unsqueeze(-1)).mul_(p)
            ds.mul_(scale)  # dS, with the chain-rule factor of S = alpha Q K^T
            kt = plan.k_tile_t(k, c0, c1).transpose(-1, -2)  # (b, h, c|1, T, e)
            plan.q_tile(dq, c0, c1).copy_(torch.matmul(ds, kt))  # dQ = dS K
            _acc_keys(plan, dk, ds, plan.q_tile(q, c0, c1), c0, c1)  # dK += dS^T Q
        return dq, dk, dv, None, None


def _forward_autograd(plan: TilePlan, q, k, v, scale, dropout_p):
    """Same maths with autograd (keeps probabilities): used when attention dropout is on."""
    b, h = q.shape[:2]
    outs, lses = [], []
    tiny = torch.finfo(q.dtype).tiny
    for c0, c1 in plan.chunks(b, h):
        s = _masked_scores(plan, q, k, c0, c1, scale, inplace=False)
        mx = s.detach().amax(-1, keepdim=True)
        mx = mx.masked_fill(mx == -math.inf, 0.0)
        p = torch.exp(s - mx)
        tot = p.sum(-1, keepdim=True)
        lse = torch.where(tot > 0, tot.clamp_min(tiny).log() + mx, -math.inf).squeeze(-1)
        p = p / tot.clamp_min(tiny)
        if dropout_p > 0:
            p = F.dropout(p, dropout_p, training=True)
        outs.append(torch.matmul(p, _v_tile(plan, v, c0, c1)).flatten(2, 3))
        lses.append(lse.flatten(2, 3))
    return torch.cat(outs, 2), torch.cat(lses, 2)


def tile_attention(
    plan: TilePlan,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the tiled kernel.

    Args:
        plan: the tile layout.
        q: ``(b, h, tiles * B, e)`` padded queries.
        k: ``(b, h, N_k, e)`` padded keys.
        v: ``(b, h, N_k, e_v)`` padded values.
        scale: score scale :math:`\\alpha`.
        dropout_p: attention dropout (switches to the autograd path when > 0).

    Returns:
        ``out (b, h, tiles * B, e_v)`` (zeros for rows with no allowed key) and
        ``lse (b, h, tiles * B)`` (``-inf`` for those rows).
    """
    assert q.shape[2] == plan.tiles * plan.block and k.shape[2] == plan.key_len
    if dropout_p > 0:
        return _forward_autograd(plan, q, k, v, scale, dropout_p)
    return _TileAttention.apply(q, k, v, plan, scale)


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
    lses = torch.stack([lse for _, lse in parts])  # (p, b, h, n)
    mx = lses.detach().amax(0)
    mx = mx.masked_fill(mx == -math.inf, 0.0)  # the result does not depend on mx
    w = torch.exp(lses - mx)  # (p, b, h, n)
    tot = w.sum(0)
    tiny = torch.finfo(w.dtype).tiny
    out = sum(w[i].unsqueeze(-1) * o for i, (o, _) in enumerate(parts)) / tot.clamp_min(
        tiny
    ).unsqueeze(-1)
    lse = torch.where(tot > 0, tot.clamp_min(tiny).log() + mx, -math.inf)
    return out, lse
