r"""The measurements behind article 7's claims, as reusable functions (pure torch).

* :func:`ks_test`: Kolmogorov-Smirnov statistic of angle samples against the exact CDF,
  :math:`D=\sup_\theta |F_N(\theta)-F_n(\theta)|`, with Stephens' asymptotic p-value;
* :func:`variance_rows`: :math:`\mathrm{Var}_n(\theta)` by quadrature, Monte Carlo (with its
  standard error) and Laplace :math:`1/(n-2)`;
* :func:`orthogonality_sweep`: :math:`\mathrm{mean}(W^\top W-I)^2` and singular-value extremes of
  variance-:math:`1/n` square (Gaussian, uniform), tall and QR-orthogonal matrices vs width;
* :func:`depth_sweep`: :math:`\log_{10}\lVert h_l\rVert/\lVert x\rVert` through a deep MLP per
  initialiser, for several independently initialised networks (so the spread is visible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from kexue.init.geometry import (
    angle_cdf,
    angle_variance,
    norm_propagation,
    orthogonality_stats,
    sample_angles,
)
from kexue.init.schemes import init_module_, orthogonal_

# (id, label, init_module_ scheme, gain, zero_bias)
SCHEMES: tuple[tuple[str, str, str, float, bool], ...] = (
    ("su", "Su 1/fan_out", "su", 1.0, True),
    ("lecun", "LeCun 1/fan_in", "lecun", 1.0, True),
    ("xavier", "Xavier 2/(in+out)", "xavier", 1.0, True),
    ("he", "He 2/fan_in", "he", 1.0, True),
    ("orthogonal", "orthogonal", "orthogonal", 1.0, True),
    ("torch", "PyTorch default", "torch", 1.0, False),
    ("su_x2", "Su x2 var", "su", math.sqrt(2.0), True),
    ("su_x05", "Su x0.5 var", "su", math.sqrt(0.5), True),
)
ACTIVATIONS: dict[str, type[nn.Module]] = {"linear": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU}


def ks_test(samples: torch.Tensor, n: int) -> tuple[float, float]:
    """KS statistic ``D`` of ``samples (N,)`` (radians) against the angle CDF in R^n, and p."""
    x, _ = torch.sort(samples)
    N = x.numel()
    F = angle_cdf(x, n)
    i = torch.arange(1, N + 1, dtype=torch.float64)
    D = float(torch.maximum(i / N - F, F - (i - 1) / N).max())
    lam = (math.sqrt(N) + 0.12 + 0.11 / math.sqrt(N)) * D  # Stephens' correction
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return D, min(max(p, 0.0), 1.0)


def sample_all(dims: Sequence[int], size: int, g: torch.Generator) -> dict[int, torch.Tensor]:
    """``size`` angle samples for each ``n`` in ``dims`` (in sorted order, from ``g``)."""
    return {n: sample_angles(n, size, g) for n in sorted(set(dims))}


def variance_rows(
    samples: dict[int, torch.Tensor], dims: Sequence[int], mc: int
) -> dict[int, dict[str, float]]:
    """Per ``n``: ``quad`` (exact), ``mc`` and ``mc_se`` (first ``mc`` samples), ``laplace``."""
    rows = {}
    for n in dims:
        a = samples[n][:mc]
        sq = (a - math.pi / 2) ** 2  # the mean is pi/2 exactly
        rows[n] = {
            "quad": angle_variance(n),
            "mc": float(sq.mean()),
            "mc_se": float(sq.std()) / math.sqrt(a.numel()),
            "laplace": angle_variance(n, "laplace") if n >= 3 else float("nan"),
        }
    return rows


def orthogonality_sweep(
    widths: Sequence[int], tall_factor: int, g: torch.Generator
) -> list[dict[str, float]]:
    """Orthogonality statistics per width ``n`` (float64): see the module docstring."""
    out = []
    for n in widths:
        gauss = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
        unif = (torch.rand(n, n, generator=g, dtype=torch.float64) * 2 - 1) * math.sqrt(3 / n)
        m = tall_factor * n
        tall = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)
        orth = orthogonal_(torch.empty(n, n, dtype=torch.float64), generator=g)
        sg, su, st, so = (orthogonality_stats(w) for w in (gauss, unif, tall, orth))
        out.append({
            "n": n, "gauss_mse": sg["mean_sq_error"], "unif_mse": su["mean_sq_error"],
            "orth_mse": so["mean_sq_error"], "gauss_min": sg["sv_min"], "gauss_max": sg["sv_max"],
            "unif_min": su["sv_min"], "unif_max": su["sv_max"], "tall_min": st["sv_min"],
            "tall_max": st["sv_max"], "orth_fro": so["fro_error"], "gauss_cos": sg["mean_abs_cos"],
        })  # fmt: skip
    return out


def _mlp(widths: list[int], act: type[nn.Module]) -> tuple[nn.Sequential, list[nn.Module]]:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), act()]  # float32; norms are taken in float64
    return nn.Sequential(*layers), layers[1::2]


def depth_sweep(
    patterns: dict[str, list[int]], x: torch.Tensor, nets: int, g: torch.Generator
) -> dict[str, dict[str, dict[str, list[list[float]]]]]:
    r"""``out[pattern][activation][scheme id][net][l]`` = :math:`\log_{10}\lVert h_l\rVert/\lVert x\rVert`.

    Args:
        patterns: name -> layer widths ``[d_0, ..., d_L]``.
        x: ``(b, d_0)`` inputs; ``‖h‖`` is the RMS over the batch of per-sample norms.
        nets: independently initialised networks per (pattern, activation, scheme).
        g: generator for the weights.
    """
    out: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
    for pname, widths in patterns.items():
        out[pname] = {}
        for aname, act in ACTIVATIONS.items():
            model, watch = _mlp(widths, act)
            out[pname][aname] = {}
            for sid, _label, scheme, gain, zero_bias in SCHEMES:
                curves = []
                for _ in range(nets):
                    init_module_(model, scheme, gain=gain, zero_bias=zero_bias, generator=g)
                    v = norm_propagation(model, x, modules=watch)
                    curves.append([math.log10(max(u / v[0], 1e-300)) for u in v])
                out[pname][aname][sid] = curves
    return out
