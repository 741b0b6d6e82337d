r"""Linear-chain CRF head, as in Su's 《简明条件随机场CRF介绍》 (2018) and 《CRF用过了，不妨再了解下更快的MEMM？》 (2020).

$$s(y)=f_1(y_1)+\sum_{s=2}^t\big(g(y_{s-1},y_s)+f_s(y_s)\big),\qquad
P(y\mid x)=\frac{e^{s(y)}}{Z},\qquad Z=\sum_{y'}e^{s(y')},$$

loss $-\log P(y\mid x)=\log Z-s(y)$ per sequence (summed over positions; ``reduction="mean"``
averages over the batch, like Keras). ``transitions`` $g$ is ``(k, k)`` with row = previous tag and
column = next tag. Su's CRF has no start/end vectors; ``start_end=True`` adds them
(pytorch-crf style: $s(y)\mathrel{+}=\mathrm{start}(y_1)+\mathrm{end}(y_n)$).

``constraints`` (see :func:`kexue.tagging.schemes.allowed_transitions`) forbid transitions, first
and last tags: training adds a large negative finite penalty (so gradients stay finite), decoding
uses ``-inf`` so a forbidden path is never returned.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kexue.core.checks import check_positive_int
from kexue.tagging import _chain
from kexue.tagging._common import (
    Constraints,
    check_inputs,
    end_onehot,
    gold_score,
    reduce_loss,
    register_constraints,
)
from kexue.tagging.viterbi import viterbi_decode, viterbi_nbest

FORBIDDEN = -1.0e4  # penalty for a forbidden transition during training


class CRF(nn.Module):
    """Linear-chain conditional random field over ``num_tags`` tags (batch first).

    Args:
        num_tags: ``k``.
        constraints: allowed transitions: a ``(k, k)`` bool tensor (True = allowed) or a
            :class:`~kexue.tagging.schemes.Constraints` with allowed starts and ends too.
        start_end: add learnable start and end score vectors ``(k,)`` (off in Su's CRF).

    Shapes: ``emissions (b, t, k)``, ``tags (b, t)``, ``mask (b, t)`` bool prefix mask with
    ``mask[:, 0]`` True (or ``lengths (b,)`` with every length >= 1).
    """

    def __init__(
        self,
        num_tags: int,
        *,
        constraints: Tensor | Constraints | None = None,
        start_end: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int(num_tags, "num_tags")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start_end = start_end
        if start_end:
            self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
            self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        register_constraints(self, num_tags, constraints)

    def extra_repr(self) -> str:
        return (
            f"num_tags={self.num_tags}, start_end={self.start_end}, constrained={self.constrained}"
        )

    # -- potentials ---------------------------------------------------------------------------
    def _potentials(self, emissions: Tensor, mask: Tensor, penalty: float) -> tuple[Tensor, Tensor]:
        """Fold start/end scores and constraints into ``(emissions', transitions')``; padded
        steps are zeroed (they never count, and garbage there must not reach the gradients)."""
        emissions = emissions.masked_fill(~mask.unsqueeze(2), 0.0)
        trans = self.transitions
        if self.start_end or self.constrained:
            first = torch.zeros_like(emissions[:, 0])
            last = torch.zeros_like(emissions[:, 0])
            if self.start_end:
                first = first + self.start
                last = last + self.end
            if self.constrained:
                first = first.masked_fill(~self.allowed_start, penalty)
                last = last.masked_fill(~self.allowed_end, penalty)
                trans = trans.masked_fill(~self.allowed, penalty)
            at_end = end_onehot(mask).unsqueeze(2)  # (b, t, 1): True at the last valid step
            emissions = emissions + torch.where(
                at_end, last.unsqueeze(1), torch.zeros_like(last).unsqueeze(1)
            )
            emissions = torch.cat([emissions[:, :1] + first.unsqueeze(1), emissions[:, 1:]], 1)
        return emissions, trans.to(emissions.dtype)

    # -- public API ---------------------------------------------------------------------------
    def log_partition(
        self, emissions: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """$\\log Z$ per sequence.

        Args:
            emissions: ``(b, t, k)``.
            mask: ``(b, t)`` bool prefix mask, or ``lengths`` ``(b,)``.

        Returns:
            ``(b,)`` log partition function.
        """
        mask = check_inputs(emissions, None, mask, lengths, self.num_tags)
        em, trans = self._potentials(emissions, mask, FORBIDDEN)
        return _chain.log_partition(em, trans, mask)

    def log_partition_reference(
        self, emissions: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """Same as :meth:`log_partition` by plain autograd through the recursion (tests)."""
        mask = check_inputs(emissions, None, mask, lengths, self.num_tags)
        em, trans = self._potentials(emissions, mask, FORBIDDEN)
        return _chain.log_partition_reference(em, trans, mask)

    def score(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> Tensor:
        """Unnormalised path score $s(y)$ ``(b,)`` of ``tags (b, t)`` (padded entries ignored)."""
        mask = check_inputs(emissions, tags, mask, lengths, self.num_tags)
        em, trans = self._potentials(emissions, mask, FORBIDDEN)
        return gold_score(em, trans, tags, mask)

    def loss(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
        reduction: str = "mean",
        reference: bool = False,
    ) -> Tensor:
        """Negative log-likelihood $\\log Z-s(y)$.

        Args:
            emissions: ``(b, t, k)`` scores $f$.
            tags: ``(b, t)`` gold tags in ``[0, k)`` (padded entries are ignored).
            mask: ``(b, t)`` bool prefix mask, or ``lengths`` ``(b,)``.
            reduction: ``"mean"`` (over sequences, Su's CRF), ``"sum"``, ``"token_mean"``
                (sum / number of valid tokens) or ``"none"`` (``(b,)``).
            reference: use the plain-autograd recursion instead of the fast custom backward.

        Returns:
            Scalar, or ``(b,)`` for ``reduction="none"``.

        Raises:
            ValueError: bad shapes, a non-prefix mask, tags out of range or unknown reduction.
        """
        mask = check_inputs(emissions, tags, mask, lengths, self.num_tags)
        em, trans = self._potentials(emissions, mask, FORBIDDEN)
        log_z = (
            _chain.log_partition_reference(em, trans, mask)
            if reference
            else _chain.log_partition(em, trans, mask)
        )
        nll = log_z - gold_score(em, trans, tags, mask)
        return reduce_loss(nll, mask, reduction)

    def marginals(
        self, emissions: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """Posterior marginals $P(y_s=j\\mid x)$.

        Args:
            emissions: ``(b, t, k)``.
            mask: ``(b, t)`` bool prefix mask, or ``lengths`` ``(b,)``.

        Returns:
            ``(b, t, k)``, rows summing to 1 at valid steps and 0 at padded steps (no graph).
        """
        mask = check_inputs(emissions, None, mask, lengths, self.num_tags)
        em, trans = self._potentials(emissions.detach(), mask, FORBIDDEN)
        return _chain.marginals_exp(em, trans.detach(), mask)

    @torch.no_grad()
    def decode(
        self,
        emissions: Tensor,
        mask: Tensor | None = None,
        lengths: Tensor | None = None,
        nbest: int = 1,
    ) -> tuple[Tensor, Tensor]:
        """Viterbi decoding (forbidden transitions never appear).

        Args:
            emissions: ``(b, t, k)``.
            mask: ``(b, t)`` bool prefix mask, or ``lengths`` ``(b,)``.
            nbest: number of paths per sequence.

        Returns:
            ``(paths, scores)``: ``nbest == 1``: ``(b, t)`` int64 padded with -1 and ``(b,)``
            scores $s(y^*)$; otherwise ``(b, nbest, t)`` and ``(b, nbest)``, best first.
        """
        mask = check_inputs(emissions, None, mask, lengths, self.num_tags, finite=True)
        check_positive_int(nbest, "nbest")
        em, trans = self._potentials(emissions, mask, float("-inf"))
        if nbest == 1:
            return viterbi_decode(em, trans, mask)
        return viterbi_nbest(em, trans, mask, nbest)
