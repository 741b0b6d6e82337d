r"""Linear-chain sum-product: log partition and marginals, reference and fast paths.

$$\alpha_1=f_1,\quad \alpha_k(j)=f_k(j)+\log\sum_i e^{\alpha_{k-1}(i)+g(i,j)},\quad
\log Z=\log\sum_j e^{\alpha_n(j)}$$

(Su, 《简明条件随机场CRF介绍》, 2018, multiplicative form $Z_{k}=Z_{k-1}G\otimes H_{k}$).

* :func:`log_partition_reference` is the readable log-space recursion; autograd differentiates
  through all ``t`` steps. Used as the oracle for the fast path and as its fallback.
* :class:`LogPartition` is a custom ``autograd.Function``: the forward pass runs the recursion in
  exp space with per-step rescaling (one ``(b, k) @ (k, k)`` product per step instead of a
  logsumexp over ``(b, k, k)``), the backward pass runs the backward recursion once and returns the
  forward-backward marginals, since $\partial\log Z/\partial f_k(j)=P(y_k=j)$ and
  $\partial\log Z/\partial g(i,j)=\sum_k P(y_{k-1}=i,y_k=j)$.

Exp space loses states more than ~87-103 nats (float32) below the best prefix at a step; if that
makes a normaliser vanish the result is non-finite and :func:`log_partition` reruns the reference
path. A lost prefix that a later step makes dominant (it needs score gaps of ~90+ nats and
transitions that block the other prefixes) gives a finite $\log Z$ that is too small; the CRF loss
detects it as $\log Z<s(y)$ for the gold path and reruns the reference path too.
Masks are right-padded prefix masks; at a padded step the state is carried unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor


def log_partition_reference(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    """Log-space forward recursion, differentiated by autograd.

    Args:
        emissions: ``(b, t, k)``.
        transitions: ``(k, k)``, row = previous tag.
        mask: ``(b, t)`` bool prefix mask.

    Returns:
        ``(b,)`` $\\log Z$.
    """
    alpha = emissions[:, 0]
    for step in range(1, emissions.shape[1]):
        # logsumexp_i (alpha_{k-1}(i) + g(i, j)) + f_k(j)
        new = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, step]
        alpha = torch.where(mask[:, step].unsqueeze(1), new, alpha)
    return torch.logsumexp(alpha, dim=1)


def _forward_exp(emissions: Tensor, transitions: Tensor, mask: Tensor):
    """Rescaled exp-space forward pass.

    Returns ``(log_z (b,), p (b, t, k), ef (b, t, k), e (k, k), s (b, t))``: ``p[:, s]`` is
    $\\alpha_s$ normalised to sum 1, ``ef = exp(f - max f)``, ``e = exp(g - max g)`` and ``s`` the
    per-step normalisers (1 at padded steps).
    """
    b, t, k = emissions.shape
    c = transitions.max()
    c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    e = torch.exp(transitions - c)  # (k, k)
    fm = emissions.max(dim=2, keepdim=True).values  # (b, t, 1)
    ef = torch.exp(emissions - fm)  # (b, t, k)
    p = torch.empty_like(emissions)
    s = torch.ones(b, t, dtype=emissions.dtype, device=emissions.device)
    q = ef[:, 0]
    s0 = q.sum(1)
    s[:, 0] = s0
    cur = q / s0.unsqueeze(1)
    p[:, 0] = cur
    full = int(mask.sum(1).min()) if b else t  # steps valid in every row: no masking needed
    off = ~mask
    for step in range(1, t):
        q = (cur @ e) * ef[:, step]  # (b, k): sum_i p(i) G(i, j) H(j)
        z = q.sum(1)
        if step < full:
            cur = q / z.unsqueeze(1)
        else:
            z = z.masked_fill(off[:, step], 1.0)
            cur = torch.where(mask[:, step].unsqueeze(1), q / z.unsqueeze(1), cur)
        s[:, step] = z
        p[:, step] = cur
    shift = (fm.squeeze(2) + c) * mask
    shift[:, 0] = fm[:, 0, 0]
    log_z = (torch.log(s) + shift).sum(1)
    return log_z, p, ef, e, s


def _marginal_grads(
    p: Tensor, ef: Tensor, e: Tensor, s: Tensor, mask: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor]:
    """Backward recursion in exp space -> weighted unary and pairwise marginals.

    Returns ``(d_emissions (b, t, k), d_transitions (k, k))`` for upstream gradient ``weight (b,)``.
    """
    b, t, k = p.shape
    r = torch.empty_like(p)  # beta_s normalised to sum 1
    cur = torch.ones(b, k, dtype=p.dtype, device=p.device) / k
    r[:, t - 1] = cur
    full = int(mask.sum(1).min()) if b else t
    e_t = e.T.contiguous()
    for step in range(t - 1, 0, -1):
        # beta_{s-1}(i) = sum_j G(i, j) H_s(j) beta_s(j)
        v = (ef[:, step] * cur) @ e_t
        v = v / v.sum(1, keepdim=True)
        cur = v if step < full else torch.where(mask[:, step].unsqueeze(1), v, cur)
        r[:, step - 1] = cur
    unary = p * r
    unary = unary / unary.sum(2, keepdim=True)
    d_em = unary * (weight.view(b, 1, 1) * mask.unsqueeze(2))
    if t == 1:
        return d_em, torch.zeros_like(e)
    # pair marginals xi_s(i, j) = p_{s-1}(i) G(i, j) H_s(j) r_s(j) / N_s,
    # N_s = sum_j q_s(j) r_s(j) = s_s * sum_j p_s(j) r_s(j)
    right = ef[:, 1:] * r[:, 1:]  # (b, t-1, k)
    norm = s[:, 1:] * (p[:, 1:] * r[:, 1:]).sum(2)  # (b, t-1)
    scale = weight.view(b, 1) * mask[:, 1:] / norm
    right = right * scale.unsqueeze(2)
    d_tr = (p[:, :-1].reshape(-1, k).T @ right.reshape(-1, k)) * e
    return d_em, d_tr


class LogPartition(torch.autograd.Function):
    """$\\log Z$ with a forward-backward (marginals) gradient. Inputs as in the reference."""

    @staticmethod
    def forward(ctx, emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:  # noqa: D102
        log_z, p, ef, e, s = _forward_exp(emissions, transitions, mask)
        ctx.save_for_backward(p, ef, e, s, mask)
        return log_z

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        p, ef, e, s, mask = ctx.saved_tensors
        d_em, d_tr = _marginal_grads(p, ef, e, s, mask, grad)
        return d_em, d_tr, None


def log_partition(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    """Fast $\\log Z$ ``(b,)`` (custom backward); falls back to the reference if exp space fails.

    Half-precision inputs (e.g. under bf16 autocast) are computed in float32.
    """
    if emissions.dtype in (torch.float16, torch.bfloat16):
        emissions = emissions.float()
    transitions = transitions.to(emissions.dtype)
    log_z = LogPartition.apply(emissions, transitions, mask)
    if not bool(torch.isfinite(log_z).all()):
        return log_partition_reference(emissions, transitions, mask)
    return log_z


def marginals_exp(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    """Unary marginals ``(b, t, k)`` $P(y_s=j\\mid x)$ (0 at padded steps), no autograd graph."""
    with torch.no_grad():
        log_z, p, ef, e, s = _forward_exp(emissions, transitions, mask)
        if not bool(torch.isfinite(log_z).all()):
            return _marginals_autograd(emissions, transitions, mask)
        weight = torch.ones(emissions.shape[0], dtype=emissions.dtype, device=emissions.device)
        return _marginal_grads(p, ef, e, s, mask, weight)[0]


def _marginals_autograd(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    with torch.enable_grad():
        em = emissions.detach().requires_grad_(True)
        log_z = log_partition_reference(em, transitions.detach(), mask)
        (grad,) = torch.autograd.grad(log_z.sum(), em)
    return grad
