r"""Batched max-product (Viterbi) and n-best decoding for linear chains, TorchScript-able.

Score of a tag path $y$ of length $t$ over $k$ tags (Su, 简明条件随机场CRF介绍, 2018; 《CRF用过了，不妨再了解下更快的MEMM？》, 2020):

$$s(y)=f_1(y_1)+\sum_{s=2}^{t}\big(g_s(y_{s-1},y_s)+f_s(y_s)\big),$$

with unary scores $f$ ``(b, t, k)`` and pairwise scores $g$ either shared ``(k, k)`` (a CRF's
transition matrix) or per step ``(b, t, k, k)`` (an MEMM's local log-probabilities; entry ``t``
scores the pair ``(y_{t-1}, y_t)``, entry 0 is ignored). Viterbi recursion:

$$\delta_1=f_1,\qquad \delta_s(j)=f_s(j)+\max_i\big(\delta_{s-1}(i)+g_s(i,j)\big).$$

Masks are right-padded prefix masks (True = valid): at a padded step the state is carried
unchanged with identity back-pointers, so each row is decoded over its own length. Ties break to the
lowest tag index (``torch.max`` returns the first maximum). Everything here returns tensors only and
compiles with ``torch.jit.script``; validation happens in the calling modules.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pairwise_at(pairwise: Tensor, step: int) -> Tensor:
    """``(k, k)`` shared or ``(b, t, k, k)`` per-step pairwise scores -> scores for ``step``."""
    if pairwise.dim() == 2:
        return pairwise.unsqueeze(0)  # (1, k, k)
    return pairwise[:, step]  # (b, k, k)


def viterbi_decode(emissions: Tensor, pairwise: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    r"""Best path of every sequence in a batch.

    At tagging sizes every op is a few microseconds of dispatch on a few thousand numbers, so
    the cost is the number of ops per step, and both loops keep it small:

    * forward: only $\delta$ is kept (``amax`` over the outermost dimension of a
      ``(k_prev, b, k_next)`` tensor is ~3x faster on CPU than ``max`` with indices over the
      middle one), for every step, padded ones included: the mask is a prefix mask, so what
      follows a row's end never feeds its valid steps, and each row's final $\delta$ is read
      at its own last step;
    * back-trace: $\arg\max_i(\delta_{s-1}(i)+g(i,y_s))$ is recomputed for the chosen tag
      only, from the same numbers, so it equals stored back-pointers exactly (ties to the
      lowest tag), and the tag is kept through padded steps.

    Per-step inputs are split once (``unbind``) rather than indexed at every step.

    Args:
        emissions: ``(b, t, k)`` unary scores $f$.
        pairwise: ``(k, k)`` shared transition scores (row = previous tag, column = next tag) or
            ``(b, t, k, k)`` per-step scores (index ``t`` scores the move into step ``t``).
        mask: ``(b, t)`` bool prefix mask, ``mask[:, 0]`` all True.

    Returns:
        ``(paths, scores)``: ``paths`` ``(b, t)`` int64 with -1 at padded positions, ``scores``
        ``(b,)`` the path scores $s(y^*)$ in the dtype of ``emissions``.
    """
    b, t, k = emissions.shape
    shared = pairwise.dim() == 2
    # previous tag outermost: (k_prev, b, k_next) makes the max a fast reduction over dim 0
    if shared:
        pw = pairwise.unsqueeze(1)  # (k, 1, k)
    else:
        pw = pairwise.permute(1, 2, 0, 3).contiguous()  # (t, k_prev, b, k_next)
    em = emissions.unbind(1)  # t tensors (b, k)
    delta = em[0]
    deltas: list[Tensor] = [delta]
    for step in range(1, t):
        g = pw if shared else pw[step]
        # max_i (delta_{s-1}(i) + g(i, j)), taken over the previous tag i
        delta = (delta.t().contiguous().unsqueeze(2) + g).amax(dim=0) + em[step]
        deltas.append(delta)
    rows = torch.arange(b, device=emissions.device)
    final = torch.stack(deltas, 0)[mask.sum(1) - 1, rows]  # (b, k): at each row's last step
    scores, last = final.max(dim=1)
    # g(., j) as rows: (k_next, k_prev) shared, (b, t, k_next, k_prev) per step (views)
    cols = pairwise.t() if shared else pairwise.transpose(2, 3)
    valid = mask.t().unbind(0)  # t tensors (b,)
    tag = last
    tags: list[Tensor] = [tag]
    for step in range(t - 1, 0, -1):
        col = cols[tag] if shared else cols[rows, step, tag]  # (b, k_prev): g_step(i, tag)
        prev = torch.max(deltas[step - 1] + col, 1)[1]  # first maximum, as argmax
        tag = torch.where(valid[step], prev, tag)
        tags.append(tag)
    path = torch.stack(tags, 1).flip(1)  # (b, t)
    return path.masked_fill(~mask, -1), scores


def viterbi_nbest(
    emissions: Tensor, pairwise: Tensor, mask: Tensor, nbest: int
) -> tuple[Tensor, Tensor]:
    """The ``nbest`` highest-scoring paths of every sequence, best first.

    Keeps the top ``nbest`` partial scores per (step, tag); the back-pointer of an entry stores
    ``previous_tag * nbest + rank``. When a sequence has fewer than ``nbest`` distinct paths the
    surplus entries have score ``-inf`` and path -1 everywhere.

    Args:
        emissions: ``(b, t, k)`` unary scores.
        pairwise: ``(k, k)`` or ``(b, t, k, k)`` pairwise scores, as in :func:`viterbi_decode`.
        mask: ``(b, t)`` bool prefix mask.
        nbest: number of paths, >= 1.

    Returns:
        ``(paths, scores)``: ``(b, nbest, t)`` int64 padded with -1 and ``(b, nbest)`` scores,
        descending.
    """
    b, t, k = emissions.shape
    n = nbest
    neg = torch.full((b, k, n), float("-inf"), dtype=emissions.dtype, device=emissions.device)
    delta = neg.clone()
    delta[:, :, 0] = emissions[:, 0]  # (b, k, n): one real path per tag at step 1
    ident = (torch.arange(k, device=emissions.device) * n).view(1, k, 1) + torch.arange(
        n, device=emissions.device
    ).view(1, 1, n)
    ident = ident.expand(b, k, n)
    pointers: list[Tensor] = []
    for step in range(1, t):
        # candidates (previous tag i, rank r) -> next tag j
        cand = delta.unsqueeze(3) + _pairwise_at(pairwise, step).unsqueeze(2)  # (b, k, n, k)
        cand = cand.reshape(b, k * n, k)
        m = min(n, k * n)
        best, arg = cand.topk(m, dim=1)  # (b, m, k), sorted descending
        best = best.transpose(1, 2) + emissions[:, step].unsqueeze(2)  # (b, k, m)
        arg = arg.transpose(1, 2)
        if m < n:
            best = torch.cat([best, neg[:, :, : n - m]], dim=2)
            arg = torch.cat([arg, ident[:, :, : n - m]], dim=2)
        on = mask[:, step].view(b, 1, 1)
        delta = torch.where(on, best, delta)
        pointers.append(torch.where(on, arg, ident))
    final = delta.reshape(b, k * n)
    m = min(n, k * n)
    scores, flat = final.topk(m, dim=1)  # (b, m)
    if m < n:
        scores = torch.cat([scores, neg[:, 0, : n - m]], dim=1)
        flat = torch.cat([flat, flat[:, :1].expand(b, n - m)], dim=1)
    paths = torch.empty(b, n, t, dtype=torch.long, device=emissions.device)
    paths[:, :, t - 1] = torch.div(flat, n, rounding_mode="floor")
    state = flat  # (b, n): tag * n + rank
    for step in range(t - 1, 0, -1):
        state = pointers[step - 1].reshape(b, k * n).gather(1, state)
        paths[:, :, step - 1] = torch.div(state, n, rounding_mode="floor")
    invalid = (~mask).unsqueeze(1) | torch.isinf(scores).unsqueeze(2)
    paths = paths.masked_fill(invalid, -1)
    return paths, scores
