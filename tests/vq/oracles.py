"""Independent references for the kexue.vq tests (never import kexue.vq here)."""

from __future__ import annotations

import torch


def brute_nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit (n, m) table of squared distances in float64; first index on ties."""
    d = (z.double()[:, None, :] - codebook.double()[None, :, :]).square().sum(-1)
    best = d.min(dim=1).values
    # lowest index among exact minima, found without argmin's tie rule
    idx = torch.stack([torch.nonzero(row == b)[0, 0] for row, b in zip(d, best)])
    return idx, best


def ema_reference(
    codebook: torch.Tensor,
    count: torch.Tensor,
    total: torch.Tensor,
    batches: list[torch.Tensor],
    decay: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sonnet-style EMA codebook updates over ``batches`` (each (n, d)), plain loops in float64."""
    e, N, M = codebook.double().clone(), count.double().clone(), total.double().clone()
    m = e.shape[0]
    for z in batches:
        z = z.double()
        assign = [int(((e - zi) ** 2).sum(1).argmin()) for zi in z]
        n = torch.zeros(m, dtype=torch.float64)
        s = torch.zeros_like(e)
        for zi, k in zip(z, assign):
            n[k] += 1
            s[k] += zi
        N = decay * N + (1 - decay) * n
        M = decay * M + (1 - decay) * s
        tot = N.sum()
        Ns = (N + eps) / (tot + m * eps) * tot
        e = M / Ns[:, None]
    return e, N, M
