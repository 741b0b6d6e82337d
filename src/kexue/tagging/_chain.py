r"""Linear-chain sum-product: log partition and marginals, reference and fast paths.

$$\alpha_1=f_1,\quad \alpha_s(j)=f_s(j)+\log\sum_i e^{\alpha_{s-1}(i)+g(i,j)},\quad
\log Z=\log\sum_j e^{\alpha_t(j)}$$

for emissions $f$ ``(b, t, k)`` (t steps, k tags) and transitions $g$ ``(k, k)``
(Su, 《简明条件随机场CRF介绍》, 2018, multiplicative form $Z_s=Z_{s-1}G\otimes H_s$).

* :func:`log_partition_reference` is the readable log-space recursion; autograd differentiates
  through all ``t`` steps. It is the oracle of the fast path and, run in float64, its exact
  fallback.
* :class:`LogPartition` is a custom ``autograd.Function``: the forward pass runs the recursion in
  exp space with per-step rescaling (one ``(b, k) @ (k, k)`` product per step instead of a
  logsumexp over ``(b, k, k)``), the backward pass runs the backward recursion once and returns the
  forward-backward marginals, since $\partial\log Z/\partial f_s(j)=P(y_s=j)$ and
  $\partial\log Z/\partial g(i,j)=\sum_s P(y_{s-1}=i,y_s=j)$.

**When exp space is exact.** Let $R=\max_s(\max_j f_s(j)-\min_j f_s(j))+\max g-\min g$ over the
valid steps of a row. Every rescaled forward state then satisfies
$\bar\alpha_s(j)\ge e^{-R}/k$ (and the backward states likewise), because
$q_s(j)=\sum_i\bar\alpha_{s-1}(i)e^{g(i,j)-\max g}e^{f_s(j)-\max f_s}\ge e^{-R}$ with
$\sum_i\bar\alpha_{s-1}(i)=1$ and $\sum_jq_s(j)\le k$. With $R\le$ :data:`EXP_SAFE_RANGE`
(40 nats) no state, product of two states or pair-marginal scale leaves float32's normal range,
so nothing underflows and only rounding remains. Rows with a wider range (large emissions,
``-1e4`` constraint penalties, non-finite values) are computed by the log-space recursion in
float64 and cast back: exact for any finite potentials, never NaN. Masks are right-padded prefix
masks; at a padded step the state is carried unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

EXP_SAFE_RANGE = 40.0  # nats; see the module docstring for the bound


def exp_safe_rows(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    """Rows whose potentials span at most :data:`EXP_SAFE_RANGE` nats (exp space is exact).

    Args:
        emissions: ``(b, t, k)``.
        transitions: ``(k, k)``.
        mask: ``(b, t)`` bool prefix mask.

    Returns:
        ``(b,)`` bool, True where $\\max_s \\mathrm{range}_j f_s(j)+\\mathrm{range}\\,g\\le 40$.
    """
    with torch.no_grad():
        g_range = transitions.max() - transitions.min()
        f_range = (emissions.amax(2) - emissions.amin(2)).masked_fill(~mask, 0.0).amax(1)
        total = f_range + g_range
        return torch.isfinite(total) & (total <= EXP_SAFE_RANGE)


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
        # logsumexp_i (alpha_{s-1}(i) + g(i, j)) + f_s(j)
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
    # per-step views made once and states collected in lists, stacked at the end: at tagging
    # sizes each op is mostly dispatch, and this saves three of about nine per step
    efs = ef.unbind(1)
    q = efs[0]
    z = q.sum(1, keepdim=True)
    cur = q / z
    ps, zs = [cur], [z]
    full = int(mask.sum(1).min()) if b else t  # steps valid in every row: no masking needed
    off, on = (~mask).unsqueeze(2).unbind(1), mask.unsqueeze(2).unbind(1)  # t tensors (b, 1)
    for step in range(1, t):
        q = (cur @ e) * efs[step]  # (b, k): sum_i p(i) G(i, j) H(j)
        z = q.sum(1, keepdim=True)
        if step < full:
            cur = q / z
        else:
            z = z.masked_fill(off[step], 1.0)
            cur = torch.where(on[step], q / z, cur)
        ps.append(cur)
        zs.append(z)
    p = torch.stack(ps, 1)  # (b, t, k)
    s = torch.cat(zs, 1)  # (b, t)
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
    cur = torch.ones(b, k, dtype=p.dtype, device=p.device) / k
    rs = [cur]  # beta_s normalised to sum 1, from the last step back
    full = int(mask.sum(1).min()) if b else t
    e_t = e.T.contiguous()
    efs, on = ef.unbind(1), mask.unsqueeze(2).unbind(1)
    for step in range(t - 1, 0, -1):
        # beta_{s-1}(i) = sum_j G(i, j) H_s(j) beta_s(j)
        v = (efs[step] * cur) @ e_t
        v = v / v.sum(1, keepdim=True)
        cur = v if step < full else torch.where(on[step], v, cur)
        rs.append(cur)
    r = torch.stack(rs[::-1], 1)  # (b, t, k)
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
    """Fast $\\log Z$ ``(b,)`` with a custom backward, exact for any finite potentials.

    Rows that :func:`exp_safe_rows` accepts run in exp space; the others run the log-space
    recursion in float64 (cast back). Half-precision inputs (e.g. under bf16 autocast) are
    computed in float32.

    Args:
        emissions: ``(b, t, k)``.
        transitions: ``(k, k)``, row = previous tag.
        mask: ``(b, t)`` bool prefix mask.

    Returns:
        ``(b,)`` $\\log Z$ in the (float32 or wider) dtype of ``emissions``.
    """
    if emissions.dtype in (torch.float16, torch.bfloat16):
        emissions = emissions.float()
    # padded steps never count; zero them so that garbage there (inf, NaN) cannot leak into
    # the gradients through 0 * inf
    emissions = emissions.masked_fill(~mask.unsqueeze(2), 0.0)
    transitions = transitions.to(emissions.dtype)
    safe = exp_safe_rows(emissions, transitions, mask)
    if bool(safe.all()):
        return LogPartition.apply(emissions, transitions, mask)
    wide = (~safe).nonzero().squeeze(1)
    exact = log_partition_reference(emissions[wide].double(), transitions.double(), mask[wide]).to(
        emissions.dtype
    )
    if not bool(safe.any()):
        return exact
    ok = safe.nonzero().squeeze(1)
    fast = LogPartition.apply(emissions[ok], transitions, mask[ok])
    out = emissions.new_zeros(emissions.shape[0])
    return out.index_copy(0, ok, fast).index_copy(0, wide, exact)


def marginals_exp(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    """Unary marginals ``(b, t, k)`` $P(y_s=j\\mid x)$ (0 at padded steps), no autograd graph.

    Same split as :func:`log_partition`: exp space where exact, float64 log space elsewhere.
    """
    with torch.no_grad():
        if emissions.dtype in (torch.float16, torch.bfloat16):
            emissions = emissions.float()
        emissions = emissions.masked_fill(~mask.unsqueeze(2), 0.0)
        transitions = transitions.to(emissions.dtype)
        out = torch.zeros_like(emissions)
        safe = exp_safe_rows(emissions, transitions, mask)
        if bool(safe.any()):
            ok = safe.nonzero().squeeze(1)
            _, p, ef, e, s = _forward_exp(emissions[ok], transitions, mask[ok])
            weight = torch.ones(len(ok), dtype=emissions.dtype, device=emissions.device)
            out[ok] = _marginal_grads(p, ef, e, s, mask[ok], weight)[0]
        if not bool(safe.all()):
            wide = (~safe).nonzero().squeeze(1)
            grad = _marginals_autograd(emissions[wide].double(), transitions.double(), mask[wide])
            out[wide] = grad.to(emissions.dtype)
        return out


def _marginals_autograd(emissions: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
    with torch.enable_grad():
        em = emissions.detach().requires_grad_(True)
        log_z = log_partition_reference(em, transitions.detach(), mask)
        (grad,) = torch.autograd.grad(log_z.sum(), em)
    return grad * mask.unsqueeze(2)
