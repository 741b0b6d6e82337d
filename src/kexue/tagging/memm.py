r"""MEMM and Su's bidirectional MEMM (《CRF用过了，不妨再了解下更快的MEMM？》, kexue.fm, 2020-02-24).

Same numerator as the CRF, local instead of global normalisation:

$$P_\rightarrow(y\mid x)=\operatorname{softmax}(f_1)_{y_1}\prod_{s=2}^{t}
\frac{e^{g(y_{s-1},y_s)+f_s(y_s)}}{\sum_{y}e^{g(y_{s-1},y)+f_s(y)}} .$$

Training is teacher forced: step $k$ sees the *gold* previous tag, so the loss is a sum of
per-step cross-entropies computed in one parallel pass (no recursion). The backward model
factorises right-to-left, $P(y_n\mid x)=\operatorname{softmax}(f_n)$,
$P(y_s\mid y_{s+1})\propto e^{g(y_s,y_{s+1})+f_s(y_s)}$; it is computed by reversing each sequence
within its length and using $g^\top$ (bert4keras's form). Bi-MEMM loss
$=\tfrac12(\mathcal L_\rightarrow+\mathcal L_\leftarrow)$, no extra parameters.

``half_scale=True`` reproduces bert4keras's logits $\tfrac12(f_s+g(y_{s-1},\cdot))$ (and $f_1$ at
the first step). ``rank=d`` uses low-rank transitions $g=LR^\top$; training then never builds the
$k\times k$ matrix. Decoding:

* ``"memm_exact"`` (default): exact MAP of the model's own probability by Viterbi over the local
  log-probabilities; for the Bi-MEMM it maximises $\tfrac12(\log P_\rightarrow+\log P_\leftarrow)$,
  the product of the two directional models, which is still a chain of pairwise terms;
* ``"crf_viterbi"``: Su's practice, CRF-style Viterbi on emissions + transitions, ignoring the
  local normalisers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.core.checks import check_positive_int
from kexue.tagging._common import (
    Constraints,
    check_inputs,
    end_onehot,
    reduce_loss,
    register_constraints,
)
from kexue.tagging.crf import FORBIDDEN
from kexue.tagging.viterbi import viterbi_decode, viterbi_nbest

DECODE_MODES = ("memm_exact", "crf_viterbi")


def _local_nll_reference(
    emissions: Tensor, rows: Tensor, tags: Tensor, weight: Tensor, scale: Tensor | None
) -> Tensor:
    """Per-sequence sum of step cross-entropies, ``(b,)``, by plain autograd.

    ``rows (b, t, k)`` holds $g(c_s,\\cdot)$ for each step's conditioning tag, ``weight (b, t)``
    the mask as floats and ``scale (b, t)`` the optional half-scale factors.
    """
    logits = emissions + rows
    if scale is not None:
        logits = logits * scale.unsqueeze(2)
    logp = F.log_softmax(logits, dim=2)
    return -(logp.gather(2, tags.unsqueeze(2)).squeeze(2) * weight).sum(1)


class LocalNLL(torch.autograd.Function):
    """Fused step cross-entropies $\\sum_s w_s(\\log\\sum_j e^{z_s(j)}-z_s(y_s))$,
    $z_s=c_s\\,(f_s+\\text{table}[\\text{context}_s])$, with the closed-form gradient
    $\\partial/\\partial z_s=w_s(\\operatorname{softmax}(z_s)-\\mathbb 1_{y_s})$ and an
    ``index_add`` into the ``(k + 1, k)`` table: a few passes over ``(b, t, k)``, no autograd graph.
    """

    @staticmethod
    def forward(ctx, emissions, table, context, tags, weight, scale):  # noqa: D102
        b, t, k = emissions.shape
        rows = table.index_select(0, context.reshape(-1)).view(b, t, k)  # g(c_s, .)
        logits = emissions + rows
        if scale is not None:
            logits = logits * scale.unsqueeze(2)
        logp = F.log_softmax(logits, dim=2)  # one fused kernel; exp(logp) is the gradient's softmax
        gold = logp.gather(2, tags.unsqueeze(2)).squeeze(2)
        ctx.save_for_backward(logp, context, tags, weight, scale)
        ctx.table_rows = table.shape[0]
        return -(gold * weight).sum(1)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        logp, context, tags, weight, scale = ctx.saved_tensors
        w = (weight * grad.unsqueeze(1)).unsqueeze(2)  # (b, t, 1)
        d = logp.exp()  # softmax
        d.scatter_add_(2, tags.unsqueeze(2), torch.full_like(w, -1.0).expand_as(tags.unsqueeze(2)))
        d.mul_(w)
        if scale is not None:
            d.mul_(scale.unsqueeze(2))
        k = d.shape[2]
        d_table = torch.zeros(ctx.table_rows, k, dtype=d.dtype, device=d.device)
        d_table.index_add_(0, context.reshape(-1), d.reshape(-1, k))
        return d, d_table, None, None, None, None


class MEMM(nn.Module):
    """Left-to-right maximum-entropy Markov model head (batch first).

    Args:
        num_tags: ``k``.
        constraints: allowed transitions (``(k, k)`` bool or
            :class:`~kexue.tagging.schemes.Constraints`).
        rank: ``None`` for a full ``(k, k)`` ``transitions`` parameter, or ``d`` for
            ``transitions = left @ right.T`` with ``left, right`` of shape ``(k, d)``.
        half_scale: use bert4keras's logits $\\tfrac12(f+g)$ instead of the article's $f+g$.
        decode_mode: ``"memm_exact"`` or ``"crf_viterbi"``.
    """

    bidirectional = False

    def __init__(
        self,
        num_tags: int,
        *,
        constraints: Tensor | Constraints | None = None,
        rank: int | None = None,
        half_scale: bool = False,
        decode_mode: str = "memm_exact",
    ) -> None:
        super().__init__()
        check_positive_int(num_tags, "num_tags")
        if decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {DECODE_MODES}, got {decode_mode!r}")
        self.num_tags = num_tags
        self.rank = rank
        self.half_scale = half_scale
        self.decode_mode = decode_mode
        if rank is None:
            self.transitions_full = nn.Parameter(
                torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1)
            )
        else:
            check_positive_int(rank, "rank")
            self.left = nn.Parameter(torch.randn(num_tags, rank) * rank**-0.5 * 0.1)
            self.right = nn.Parameter(torch.randn(num_tags, rank) * rank**-0.5)
        register_constraints(self, num_tags, constraints)

    def extra_repr(self) -> str:
        return (
            f"num_tags={self.num_tags}, rank={self.rank}, half_scale={self.half_scale}, "
            f"decode_mode={self.decode_mode!r}, constrained={self.constrained}"
        )

    @property
    def transitions(self) -> Tensor:
        """``(k, k)`` transition scores $g$, row = previous tag (``left @ right.T`` if low rank)."""
        if self.rank is None:
            return self.transitions_full
        return self.left @ self.right.T

    # -- training ------------------------------------------------------------------------------
    def _context(self, tags: Tensor, mask: Tensor, backward: bool) -> Tensor:
        """Conditioning tag of every step, ``(b, t)`` in ``[0, k]``; ``k`` = none (first step).

        Forward: the previous gold tag. Backward: the next gold tag, none at the last valid step;
        summing per-step terms makes reversing the sequence unnecessary.
        """
        b = tags.shape[0]
        none = torch.full((b, 1), self.num_tags, dtype=torch.long, device=tags.device)
        if not backward:
            return torch.cat([none, tags[:, :-1]], dim=1)
        nxt = torch.cat([tags[:, 1:], none], dim=1)
        return nxt.masked_fill(end_onehot(mask), self.num_tags)

    def _table(self, backward: bool) -> Tensor:
        """``(k + 1, k)`` scores $g(c,\\cdot)$ per conditioning tag ``c``; row ``k`` = first step
        (0, or the start/end constraint penalty)."""
        trans = self.transitions.T if backward else self.transitions
        allowed = self.allowed.T if backward else self.allowed
        first = self.allowed_end if backward else self.allowed_start
        none = torch.zeros_like(trans[:1])
        if self.constrained:
            trans = trans.masked_fill(~allowed, FORBIDDEN)
            none = none.masked_fill(~first, FORBIDDEN)
        return torch.cat([trans, none], dim=0)

    def _direction_nll(
        self, emissions: Tensor, tags: Tensor, mask: Tensor, backward: bool, reference: bool = False
    ) -> Tensor:
        """$-\\log P(y\\mid x)$ of one direction, ``(b,)``."""
        tags = tags.masked_fill(~mask, 0)
        context = self._context(tags, mask, backward)
        scale = None
        if self.half_scale:  # bert4keras: (f + g) / 2, but f itself at the first step
            scale = torch.where(context == self.num_tags, 1.0, 0.5).to(emissions.dtype)
        weight = mask.to(emissions.dtype)
        if self.rank is not None:  # low rank: rows L[c] R^T without the (k, k) matrix
            a, c = (self.right, self.left) if backward else (self.left, self.right)
            a = torch.cat([a, torch.zeros_like(a[:1])], dim=0)
            rows = a[context] @ c.T
            if self.constrained:
                allowed = self.allowed.T if backward else self.allowed
                first = self.allowed_end if backward else self.allowed_start
                ok = torch.cat([allowed, first.unsqueeze(0)], dim=0)  # (k + 1, k)
                rows = rows.masked_fill(~ok[context], FORBIDDEN)
            return _local_nll_reference(emissions, rows.to(emissions.dtype), tags, weight, scale)
        table = self._table(backward).to(emissions.dtype)
        if reference:
            return _local_nll_reference(emissions, table[context], tags, weight, scale)
        return LocalNLL.apply(emissions, table, context, tags, weight, scale)

    def log_prob(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
        direction: str = "forward",
    ) -> Tensor:
        """$\\log P(y\\mid x)$ of one direction's model (``"forward"`` or ``"backward"``), ``(b,)``."""
        mask = check_inputs(emissions, tags, mask, lengths, self.num_tags)
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
        return -self._direction_nll(emissions, tags, mask, direction == "backward")

    def loss(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
        reduction: str = "token_mean",
        reference: bool = False,
    ) -> Tensor:
        """Teacher-forced negative log-likelihood (Bi-MEMM: mean of both directions).

        Args:
            emissions: ``(b, t, k)`` scores $f$.
            tags: ``(b, t)`` gold tags in ``[0, k)``.
            mask: ``(b, t)`` bool prefix mask, or ``lengths`` ``(b,)``.
            reduction: ``"token_mean"`` (default, bert4keras: summed CE / number of tokens),
                ``"mean"`` (per-sequence NLL averaged over the batch, like the CRF), ``"sum"`` or
                ``"none"`` (``(b,)``).
            reference: plain autograd instead of the fused custom backward (tests).

        Returns:
            Scalar, or ``(b,)`` for ``reduction="none"``.
        """
        mask = check_inputs(emissions, tags, mask, lengths, self.num_tags)
        nll = self._direction_nll(emissions, tags, mask, False, reference)
        if self.bidirectional:
            nll = 0.5 * (nll + self._direction_nll(emissions, tags, mask, True, reference))
        return reduce_loss(nll, mask, reduction)

    # -- decoding ------------------------------------------------------------------------------
    def _local_chain(
        self, emissions: Tensor, mask: Tensor, backward: bool
    ) -> tuple[Tensor, Tensor]:
        """All local log-probabilities as a chain: unary ``(b, t, k)`` and pairwise ``(b, t, k, k)``.

        Pairwise entry ``[:, s, i, j]`` scores ``(y_{s-1} = i, y_s = j)`` in the original order.
        """
        b, t, k = emissions.shape
        trans = self.transitions.to(emissions.dtype)
        if self.constrained:
            trans = trans.masked_fill(~self.allowed, FORBIDDEN)
        scale = 0.5 if self.half_scale else 1.0
        unary = torch.zeros_like(emissions)
        if not backward:
            first = emissions[:, 0]
            if self.constrained:
                first = first.masked_fill(~self.allowed_start, FORBIDDEN)
            unary[:, 0] = F.log_softmax(first, dim=1)
            # log P(y_s = j | y_{s-1} = i): normalise over the next tag j
            pair = F.log_softmax(scale * (emissions[:, 1:].unsqueeze(2) + trans), dim=3)
        else:
            last = emissions
            if self.constrained:
                last = last.masked_fill(~self.allowed_end, FORBIDDEN)
            at_end = end_onehot(mask).unsqueeze(2)
            unary = torch.where(at_end, F.log_softmax(last, dim=2), unary)
            # log P(y_{s-1} = i | y_s = j): normalise over the previous tag i
            pair = F.log_softmax(scale * (emissions[:, :-1].unsqueeze(3) + trans), dim=2)
        pair = (
            torch.cat([torch.zeros_like(pair[:, :1]), pair], dim=1)
            if t > 1
            else emissions.new_zeros(b, 1, k, k)
        )
        return unary, pair

    @torch.no_grad()
    def decode(
        self,
        emissions: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
        nbest: int = 1,
    ) -> tuple[Tensor, Tensor]:
        """Viterbi decoding with the head's ``decode_mode``.

        Args:
            emissions: ``(b, t, k)``.
            mask: ``(b, t)`` bool prefix mask, or ``lengths`` ``(b,)``.
            nbest: number of paths per sequence.

        Returns:
            ``(paths, scores)``: ``(b, t)`` int64 padded with -1 and ``(b,)`` (``"memm_exact"``:
            $\\log P$, Bi-MEMM: $\\tfrac12(\\log P_\\rightarrow+\\log P_\\leftarrow)$;
            ``"crf_viterbi"``: the CRF score); ``(b, nbest, t)`` and ``(b, nbest)`` if ``nbest > 1``.
        """
        mask = check_inputs(emissions, None, mask, lengths, self.num_tags, finite=True)
        check_positive_int(nbest, "nbest")
        if self.decode_mode == "crf_viterbi":
            unary, pair = emissions, self.transitions.to(emissions.dtype)
            if self.constrained:
                pair = pair.masked_fill(~self.allowed, float("-inf"))
        else:
            unary, pair = self._local_chain(emissions, mask, False)
            if self.bidirectional:
                u2, p2 = self._local_chain(emissions, mask, True)
                unary, pair = 0.5 * (unary + u2), 0.5 * (pair + p2)
            if self.constrained:
                pair = pair.masked_fill(~self.allowed, float("-inf"))
        if self.constrained:
            neg = torch.full_like(unary[:, 0], float("-inf"))
            first = torch.where(self.allowed_start, unary[:, 0], neg)
            unary = torch.cat([first.unsqueeze(1), unary[:, 1:]], dim=1)
            at_end = end_onehot(mask).unsqueeze(2)
            unary = torch.where(at_end & ~self.allowed_end, float("-inf"), unary)
        if nbest == 1:
            return viterbi_decode(unary, pair, mask)
        return viterbi_nbest(unary, pair, mask, nbest)


class BiMEMM(MEMM):
    """Su's bidirectional MEMM: one set of parameters, loss $\\tfrac12(\\mathcal L_\\rightarrow+\\mathcal L_\\leftarrow)$.

    Arguments as for :class:`MEMM`; ``decode_mode="memm_exact"`` maximises the product of the two
    directional models' probabilities.
    """

    bidirectional = True
