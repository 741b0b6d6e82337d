r"""Geometry of random vectors and matrices: angle law, near-orthogonality, norm propagation.

Su Jianlin, 《n维空间下两个随机向量的夹角分布》 (Scientific Spaces, 2019-11-13) and
《从几何视角来理解模型参数的初始化策略》 (2020-01-16). The angle $\theta$ between two independent
isotropic random vectors in $\mathbb R^n$ ($n\ge2$) has density on $[0,\pi]$

$$p_n(\theta)=\frac{\Gamma(n/2)}{\Gamma(\frac{n-1}{2})\sqrt\pi}\,\sin^{n-2}\theta ,\qquad
p_n(\eta=\cos\theta)=\frac{\Gamma(n/2)}{\Gamma(\frac{n-1}{2})\sqrt\pi}\,(1-\eta^2)^{\frac{n-3}{2}},$$

symmetric about $\pi/2$, with $\mathrm{Var}_n(\theta)=\int_0^\pi(\theta-\frac\pi2)^2p_n\,d\theta
\approx\frac1{n-2}$ (Laplace: $\ln\sin^{n-2}\theta\approx-\frac{n-2}2(\theta-\frac\pi2)^2$).
Hence an $n\times n$ matrix with i.i.d. variance-$1/n$ entries has nearly orthonormal columns
*entry-wise* ($\mathbb E[(W^\top W-I)_{ij}^2]=1/n$ off the diagonal), although its singular values
fill $[0,2]$ (quarter-circle law), so it is **not** an isometry in operator norm.

Densities are evaluated in log space with ``lgamma`` (no underflow at $n=10^4$); quadrature is
composite Gauss-Legendre in float64 on the window where the density is not negligible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from kexue.core.checks import check_positive_int, check_tensor

__all__ = [
    "angle_cdf",
    "angle_pdf",
    "angle_variance",
    "cos_angle_pdf",
    "norm_propagation",
    "orthogonality_stats",
    "sample_angles",
    "singular_values",
]

_GL_ORDER = 20
_GL_X, _GL_W = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(_GL_ORDER))


def _check_n(n: object, name: str = "n") -> int:
    """Dimension ``n >= 2`` (n = 1 is degenerate: the angle is 0 or pi)."""
    return check_positive_int(n, name, minimum=2)


def _log_norm_const(n: int) -> float:
    r"""$\ln\Gamma(n/2)-\ln\Gamma(\frac{n-1}2)-\frac12\ln\pi$."""
    return math.lgamma(n / 2) - math.lgamma((n - 1) / 2) - 0.5 * math.log(math.pi)


def _as_f64(x: torch.Tensor | float, name: str) -> torch.Tensor:
    if isinstance(x, bool) or not isinstance(x, torch.Tensor | float | int):
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(x).__name__}")
    return torch.as_tensor(x, dtype=torch.float64)


def _pdf(theta: torch.Tensor, n: int) -> torch.Tensor:
    """Angle density on float64 ``theta`` (any shape); 0 outside [0, pi]."""
    inside = (theta >= 0) & (theta <= math.pi)
    if n == 2:
        out = torch.full_like(theta, 1.0 / math.pi)
    else:
        # log p = log C + (n - 2) log sin(theta); sin = 0 at the ends gives log 0 = -inf -> p = 0
        log_sin = torch.log(torch.sin(theta).clamp_min(0.0))
        out = torch.exp(_log_norm_const(n) + (n - 2) * log_sin)
    return torch.where(inside, out, torch.zeros_like(out))


def angle_pdf(theta: torch.Tensor | float, n: int) -> torch.Tensor:
    r"""Density $p_n(\theta)=\frac{\Gamma(n/2)}{\Gamma(\frac{n-1}2)\sqrt\pi}\sin^{n-2}\theta$ on $[0,\pi]$.

    Args:
        theta: angles in radians, any shape (or a float); values outside $[0,\pi]$ get density 0.
        n: dimension, ``n >= 2``.

    Returns:
        float64 tensor of the same shape as ``theta``.

    Raises:
        ValueError: ``n < 2``.  TypeError: bad argument types.
    """
    n = _check_n(n)
    return _pdf(_as_f64(theta, "theta"), n)


def cos_angle_pdf(eta: torch.Tensor | float, n: int) -> torch.Tensor:
    r"""Density of $\eta=\cos\theta$: $\frac{\Gamma(n/2)}{\Gamma(\frac{n-1}2)\sqrt\pi}(1-\eta^2)^{\frac{n-3}2}$ on $[-1,1]$.

    ``n = 2`` is the arcsine law (infinite at $\pm1$); ``n = 3`` is uniform, density $1/2$.

    Args:
        eta: cosines, any shape (or a float); values outside $[-1,1]$ get density 0.
        n: dimension, ``n >= 2``.

    Returns:
        float64 tensor of the same shape as ``eta``.

    Raises:
        ValueError: ``n < 2``.  TypeError: bad argument types.
    """
    n = _check_n(n)
    eta = _as_f64(eta, "eta")
    inside = (eta >= -1) & (eta <= 1)
    if n == 3:
        out = torch.full_like(eta, 0.5)
    else:
        log_base = torch.log((1 - eta * eta).clamp_min(0.0))  # log(1 - eta^2)
        out = torch.exp(_log_norm_const(n) + 0.5 * (n - 3) * log_base)
    return torch.where(inside, out, torch.zeros_like(out))


def _window(n: int) -> tuple[float, float]:
    """Interval outside which p_n < exp(-800) relative to its peak (sin^{n-2} <= e^{-(n-2)u^2/2})."""
    half = math.pi / 2 if n <= 3 else min(math.pi / 2, 40.0 / math.sqrt(n - 2))
    return math.pi / 2 - half, math.pi / 2 + half


def _panels(a: float, b: float, panels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss-Legendre nodes and weights on [a, b], float64, shape (panels * order,)."""
    edges = torch.linspace(a, b, panels + 1, dtype=torch.float64)
    half = (edges[1:] - edges[:-1]) / 2  # (panels,)
    mid = (edges[1:] + edges[:-1]) / 2
    nodes = mid[:, None] + half[:, None] * _GL_X[None, :]
    weights = half[:, None] * _GL_W[None, :]
    return nodes.reshape(-1), weights.reshape(-1)


def angle_cdf(theta: torch.Tensor | float, n: int) -> torch.Tensor:
    r"""CDF $F_n(\theta)=\int_0^\theta p_n(t)\,dt$, by Gauss-Legendre quadrature (error ~1e-12).

    Uses the symmetry $F_n(\pi-\theta)=1-F_n(\theta)$ and integrates from the nearer end.

    Args:
        theta: angles in radians, any shape (or a float); clipped to $[0,\pi]$.
        n: dimension, ``n >= 2``.

    Returns:
        float64 tensor of the same shape as ``theta``, in $[0,1]$.

    Raises:
        ValueError: ``n < 2``.  TypeError: bad argument types.
    """
    n = _check_n(n)
    theta = _as_f64(theta, "theta").clamp(0.0, math.pi)
    if n == 2:
        return theta / math.pi
    lo, _ = _window(n)
    t = torch.minimum(theta, math.pi - theta).clamp(lo, math.pi / 2)  # integrate [lo, t] <= pi/2
    # cumulative mass at the edges of 2048 equal cells of [lo, pi/2] ...
    cells = 2048
    edges = torch.linspace(lo, math.pi / 2, cells + 1, dtype=torch.float64)
    nodes, weights = _panels(lo, math.pi / 2, cells)
    cell_mass = (_pdf(nodes, n) * weights).reshape(cells, _GL_ORDER).sum(-1)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), cell_mass.cumsum(0)])  # (cells + 1,)
    # ... plus the partial cell [edge_i, t], 20 Gauss-Legendre nodes per query
    i = torch.searchsorted(edges, t.reshape(-1), right=True).clamp(1, cells) - 1
    a = edges[i]
    half = (t.reshape(-1) - a) / 2
    part = (_pdf((a + half)[:, None] + half[:, None] * _GL_X, n) * _GL_W).sum(-1) * half
    mass = (cum[i] + part).reshape(t.shape)
    return torch.where(theta <= math.pi / 2, mass, 1.0 - mass).clamp(0.0, 1.0)


def angle_variance(n: int, method: str = "quad") -> float:
    r"""$\mathrm{Var}_n(\theta)=\int_0^\pi(\theta-\frac\pi2)^2p_n(\theta)\,d\theta$.

    Args:
        n: dimension, ``n >= 2`` (``n >= 3`` for Laplace).
        method: ``"quad"`` (composite Gauss-Legendre, float64, ~1e-14 relative) or ``"laplace"``
            ($1/(n-2)$, from $\theta\approx\mathcal N(\pi/2, 1/(n-2))$).

    Returns:
        The variance as a float (n = 2: $\pi^2/12$; n = 3: $(\pi^2-8)/4$).

    Raises:
        ValueError: ``n`` too small or unknown ``method``.
    """
    n = _check_n(n)
    if method == "laplace":
        if n < 3:
            raise ValueError(f"n must be >= 3 for method='laplace' (1/(n-2)), got {n}")
        return 1.0 / (n - 2)
    if method != "quad":
        raise ValueError(f"method must be 'quad' or 'laplace', got {method!r}")
    lo, hi = _window(n)
    nodes, weights = _panels(lo, hi, 200)
    return float(((nodes - math.pi / 2) ** 2 * _pdf(nodes, n) * weights).sum())


def sample_angles(
    n: int,
    size: int,
    generator: torch.Generator | None = None,
    *,
    chunk: int = 1 << 22,
) -> torch.Tensor:
    r"""Monte Carlo angles $\arccos\frac{\langle x,y\rangle}{\lVert x\rVert\lVert y\rVert}$, $x,y\sim\mathcal N(0,I_n)$.

    Gaussian pairs are isotropic, so their directions are uniform on the sphere. The cosine is
    clamped to $[-1,1]$ before ``arccos`` (rounding can give $1+\epsilon$ -> NaN) and pairs with a
    zero vector (undefined angle) are redrawn. Drawn in float64, in chunks of about ``chunk``
    numbers to bound memory.

    Args:
        n: dimension, ``n >= 2``.
        size: number of angles.
        generator: optional ``torch.Generator`` (CPU).
        chunk: numbers drawn per batch.

    Returns:
        float64 tensor of shape ``(size,)`` with values in $[0,\pi]$.

    Raises:
        ValueError: ``n < 2`` or ``size < 1``.
    """
    n = _check_n(n)
    size = check_positive_int(size, "size")
    chunk = check_positive_int(chunk, "chunk")
    per = max(1, chunk // (2 * n))  # pairs per batch
    out: list[torch.Tensor] = []
    have = 0
    while have < size:
        k = min(per, size - have)
        xy = torch.randn(2, k, n, dtype=torch.float64, generator=generator)
        norms = xy.norm(dim=-1)  # (2, k)
        ok = (norms > 0).all(dim=0)  # reject zero vectors
        cos = (xy[0] * xy[1]).sum(-1) / (norms[0] * norms[1]).clamp_min(1e-300)
        angles = torch.arccos(cos.clamp(-1.0, 1.0))[ok]
        out.append(angles)
        have += angles.numel()
    return torch.cat(out)[:size]


def _as_matrix(W: torch.Tensor, name: str = "W") -> torch.Tensor:
    """float64 ``[rows, prod(rest)]`` view of a weight with ``dim >= 2``."""
    check_tensor(W, name)
    if W.dim() < 2 or W.numel() == 0:
        raise ValueError(f"{name} must have shape (m, n, *k) with dim >= 2, got {tuple(W.shape)}")
    return W.detach().reshape(W.shape[0], -1).to(torch.float64)


def singular_values(W: torch.Tensor) -> torch.Tensor:
    r"""Singular values $\sigma_1\ge\dots\ge\sigma_{\min(m,n)}$ of ``W`` viewed as ``[m, n]``, in float64.

    Args:
        W: weight of shape ``(m, n)`` or ``(m, n, *k)`` (trailing dims flattened into columns).

    Returns:
        float64 tensor of shape ``(min(m, n'),)``, descending.

    Raises:
        TypeError: not a tensor.  ValueError: fewer than 2 dims or empty.
    """
    return torch.linalg.svdvals(_as_matrix(W))


def orthogonality_stats(W: torch.Tensor, *, side: str = "auto") -> dict[str, float]:
    r"""How close ``W`` (``[m, n]``) is to orthonormal columns, computed in float64.

    With $G=W^\top W$ (``side="columns"``) or $G=WW^\top$ (``side="rows"``; ``"auto"`` picks the
    smaller Gram, i.e. columns when $m\ge n$):

    * ``fro_error`` $=\lVert G-I\rVert_F$;  ``mean_sq_error`` $=\mathrm{mean}_{ij}(G-I)_{ij}^2$
      (for square Gaussian $W$ with variance $1/n$ its expectation is $(n+1)/n^2$);
    * ``sv_min``, ``sv_max``, ``sv_spread`` $=\sigma_{\max}-\sigma_{\min}$, ``condition``
      $=\sigma_{\max}/\sigma_{\min}$ (``inf`` if singular);
    * ``mean_abs_cos``: mean $|\cos|$ between distinct columns (rows for ``side="rows"``).

    Args:
        W: weight of shape ``(m, n)`` or ``(m, n, *k)``.
        side: ``"auto"``, ``"columns"`` or ``"rows"``.

    Returns:
        dict of Python floats with the keys above.

    Raises:
        TypeError: not a tensor.  ValueError: bad shape or ``side``.
    """
    A = _as_matrix(W)
    if side not in ("auto", "columns", "rows"):
        raise ValueError(f"side must be 'auto', 'columns' or 'rows', got {side!r}")
    if side == "rows" or (side == "auto" and A.shape[0] < A.shape[1]):
        A = A.T
    G = A.T @ A  # (n, n) Gram of the columns
    E = G - torch.eye(G.shape[0], dtype=G.dtype)
    sv = torch.linalg.svdvals(A)
    norms = G.diagonal().clamp_min(1e-300).sqrt()
    C = G / norms[:, None] / norms[None, :]  # column cosines
    k = C.shape[0]
    off = C.abs().sum() - C.diagonal().abs().sum()
    sv_min, sv_max = float(sv.min()), float(sv.max())
    return {
        "fro_error": float(E.norm()),
        "mean_sq_error": float((E**2).mean()),
        "sv_min": sv_min,
        "sv_max": sv_max,
        "sv_spread": sv_max - sv_min,
        "condition": sv_max / sv_min if sv_min > 0 else math.inf,
        "mean_abs_cos": float(off / (k * (k - 1))) if k > 1 else 0.0,
    }


@torch.no_grad()
def norm_propagation(
    model: nn.Module,
    x: torch.Tensor,
    *,
    modules: Iterable[nn.Module] | None = None,
    include_input: bool = True,
) -> list[float]:
    r"""Per-layer activation norms $\sqrt{\mathbb E_b\lVert h^{(l)}_b\rVert^2}$ of one forward pass.

    Forward hooks record each watched module's output (per sample flattened, batch-first), in call
    order, as the root mean square over the batch of the per-sample L2 norms, in float64. Works for
    any model; a module called twice contributes two entries.

    Args:
        model: the network; called as ``model(x)``.
        x: input batch of shape ``(b, ...)``.
        modules: modules whose outputs to record; default: every leaf module of ``model``.
        include_input: prepend the norm of ``x`` itself (so entry ``l`` is after ``l`` layers).

    Returns:
        list of floats (``len(records) + include_input``).

    Raises:
        TypeError: ``model`` not a module or ``x`` not a tensor.
        ValueError: ``x`` has no batch dimension.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_tensor(x, "x")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (b, ...) with b >= 1, got {tuple(x.shape)}")
    watch = (
        [m for m in model.modules() if not any(True for _ in m.children())]
        if modules is None
        else list(modules)
    )

    def rms_norm(t: torch.Tensor) -> float:
        t = t.detach().reshape(t.shape[0], -1).to(torch.float64)
        return float(t.pow(2).sum(-1).mean().sqrt())

    records: list[float] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            records.append(rms_norm(output))

    handles = [m.register_forward_hook(hook) for m in watch]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return ([rms_norm(x)] if include_input else []) + records
