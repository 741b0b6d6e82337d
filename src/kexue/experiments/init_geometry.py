r"""Experiment ``init-geometry``: random vectors are nearly orthogonal, so variance-1/m init preserves norms.

Su Jianlin, 《n维空间下两个随机向量的夹角分布》 (2019-11-13) and 《从几何视角来理解模型参数的初始化策略》
(2020-01-16). Four checks:

1. the angle between two Gaussian vectors in $\mathbb R^n$ follows
   $p_n(\theta)\propto\sin^{n-2}\theta$ (histograms + KS statistics, n in ``angle_dims``);
2. the article's table of $\mathrm{Var}_n(\theta)$, recomputed by quadrature, Monte Carlo and the
   Laplace approximation $1/(n-2)$;
3. entry-wise near-orthogonality of variance-$1/n$ matrices,
   $\mathbb E\,\mathrm{mean}(W^\top W-I)^2=(n+1)/n^2$ (Gaussian) or $(n-0.2)/n^2$ (uniform), next to
   their singular values (quarter-circle law: square Gaussian matrices are *not* isometries);
4. activation norms through a ``depth``-layer MLP (linear / tanh / ReLU) under each initialiser,
   at constant width and with widths alternating $d\leftrightarrow\text{alt\_factor}\cdot d$ (where
   Su's $1/m$, LeCun's $1/n$ and Xavier's $2/(n+m)$ differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kexue.core.seed import seed_everything
from kexue.core.threads import num_threads
from kexue.init import (
    angle_cdf,
    angle_variance,
    init_module_,
    norm_propagation,
    orthogonal_,
    orthogonality_stats,
    sample_angles,
)
from kexue.init import plots as pictures

ARTICLE_VAR = {
    3: "0.467401",
    10: "0.110661",
    20: "0.0525832",
    50: "0.0204053",
    100: "0.0101007",
    200: "0.00502508",
    1000: "0.001001",
}

# (label, init_module_ scheme, gain, zero_bias)
SCHEMES: tuple[tuple[str, str, float, bool], ...] = (
    ("Su 1/fan_out", "su", 1.0, True),
    ("LeCun 1/fan_in", "lecun", 1.0, True),
    ("Xavier 2/(in+out)", "xavier", 1.0, True),
    ("He 2/fan_in", "he", 1.0, True),
    ("orthogonal", "orthogonal", 1.0, True),
    ("PyTorch default", "torch", 1.0, False),
    ("Su x2 var", "su", math.sqrt(2.0), True),
    ("Su x0.5 var", "su", math.sqrt(0.5), True),
)
ACTIVATIONS = {"linear": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass(frozen=True)
class Config:
    """Every knob of the experiment."""

    seed: int = 0
    angle_dims: tuple[int, ...] = (2, 3, 10, 100, 1000)
    angle_samples: int = 100_000
    table_dims: tuple[int, ...] = (3, 10, 20, 50, 100, 200, 1000)
    mc_samples: int = 100_000
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    tall_factor: int = 16
    depth: int = 50
    mlp_width: int = 256
    alt_factor: int = 4
    batch: int = 64
    nets: int = 3  # independent networks per (scheme, activation); ratios are geometric means
    threads: int = 1  # tiny matmuls: one thread avoids oversubscription on shared CPUs


PRESETS = {
    "smoke": Config(
        angle_samples=5_000,
        mc_samples=5_000,
        widths=(16, 32, 64, 128),
        mlp_width=64,
        batch=64,
        nets=1,
    ),
    "quick": Config(angle_samples=60_000, mc_samples=60_000, nets=2),
    "full": Config(
        angle_samples=1_000_000,
        mc_samples=1_000_000,
        widths=(16, 32, 64, 128, 256, 512, 1024, 2048),
        mlp_width=512,
        batch=128,
        nets=4,
    ),
}


def _ks(samples: torch.Tensor, n: int) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic D against angle_cdf and its asymptotic p-value."""
    x, _ = torch.sort(samples)
    N = x.numel()
    F = angle_cdf(x, n)
    i = torch.arange(1, N + 1, dtype=torch.float64)
    D = float(torch.maximum(i / N - F, F - (i - 1) / N).max())
    lam = (math.sqrt(N) + 0.12 + 0.11 / math.sqrt(N)) * D  # Stephens' correction
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return D, min(max(p, 0.0), 1.0)


def _angles(cfg: Config, g: torch.Generator) -> tuple[dict[int, torch.Tensor], dict[int, Any]]:
    """Samples for every n needed (shared between histogram and table) and the variance rows."""
    dims = sorted(set(cfg.angle_dims) | set(cfg.table_dims))
    size = max(cfg.angle_samples, cfg.mc_samples)
    samples = {n: sample_angles(n, size, g) for n in dims}
    rows = {}
    for n in cfg.table_dims:
        a = samples[n][: cfg.mc_samples]
        mc = float(((a - math.pi / 2) ** 2).mean())  # the mean is pi/2 exactly
        mc_se = float(((a - math.pi / 2) ** 2).std()) / math.sqrt(a.numel())
        rows[n] = {
            "quad": angle_variance(n),
            "mc": mc,
            "mc_se": mc_se,
            "laplace": angle_variance(n, "laplace") if n >= 3 else float("nan"),
        }
    return samples, rows


def _orthogonality(
    widths: tuple[int, ...], tall_factor: int, g: torch.Generator
) -> list[dict[str, float]]:
    out = []
    for n in widths:
        gauss = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
        unif = (torch.rand(n, n, generator=g, dtype=torch.float64) * 2 - 1) * math.sqrt(3 / n)
        m = tall_factor * n
        tall = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)
        orth = orthogonal_(torch.empty(n, n, dtype=torch.float64), generator=g)
        sg, su, st, so = (orthogonality_stats(w) for w in (gauss, unif, tall, orth))
        out.append(
            {
                "n": n,
                "gauss_mse": sg["mean_sq_error"],
                "unif_mse": su["mean_sq_error"],
                "orth_mse": so["mean_sq_error"],
                "gauss_min": sg["sv_min"],
                "gauss_max": sg["sv_max"],
                "unif_min": su["sv_min"],
                "unif_max": su["sv_max"],
                "tall_min": st["sv_min"],
                "tall_max": st["sv_max"],
                "orth_fro": so["fro_error"],
                "gauss_cos": sg["mean_abs_cos"],
            }
        )
    return out


def _mlp(widths: list[int], act: type[nn.Module]) -> tuple[nn.Sequential, list[nn.Module]]:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), act()]  # float32; norms are taken in float64
    return nn.Sequential(*layers), layers[1::2]


def _propagation(cfg: Config, g: torch.Generator) -> dict[str, dict[str, dict[str, list[float]]]]:
    """norms[pattern][activation][scheme][l] = mean over ``nets`` networks of log10(||h_l|| / ||x||).

    ``||h||`` is the RMS over the batch of per-sample norms (:func:`norm_propagation`).
    """
    d = cfg.mlp_width
    patterns = {
        "constant": [d] * (cfg.depth + 1),
        "alternating": [d * (cfg.alt_factor if i % 2 else 1) for i in range(cfg.depth + 1)],
    }
    x = torch.randn(cfg.batch, d, generator=g)
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for pname, widths in patterns.items():
        out[pname] = {}
        for aname, act in ACTIVATIONS.items():
            model, watch = _mlp(widths, act)
            out[pname][aname] = {}
            for label, scheme, gain, zero_bias in SCHEMES:
                curves = []
                for _ in range(cfg.nets):
                    init_module_(model, scheme, gain=gain, zero_bias=zero_bias, generator=g)
                    v = norm_propagation(model, x, modules=watch)
                    curves.append([math.log10(max(u / v[0], 1e-300)) for u in v])
                out[pname][aname][label] = [sum(c) / len(c) for c in zip(*curves)]
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def run(cfg: Config, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run the four checks, write ``angles.png``, ``variance.png``, ``orthogonality.png`` and
    ``norms.png`` into ``out_dir`` and return the results dict (:mod:`kexue.report.schema`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = seed_everything(cfg.seed, deterministic=False)
    say = print if progress else (lambda *a, **k: None)
    with num_threads(cfg.threads):
        return _run(cfg, out_dir, g, say)


def _run(cfg: Config, out_dir: Path, g: torch.Generator, say: Any) -> dict[str, Any]:

    say("init-geometry: sampling angles")
    samples, var_rows = _angles(cfg, g)
    ks = {n: _ks(samples[n][: cfg.angle_samples], n) for n in cfg.angle_dims}
    say("init-geometry: orthogonality vs width")
    ortho = _orthogonality(cfg.widths, cfg.tall_factor, g)
    o100 = _orthogonality((100,), cfg.tall_factor, g)[0]  # the article's snippet: n = 100
    say("init-geometry: norm propagation")
    norms = _propagation(cfg, g)
    say("init-geometry: plots")
    plots = [
        {
            "file": pictures.plot_angle_histograms(
                {n: samples[n][: cfg.angle_samples] for n in cfg.angle_dims}, out_dir / "angles.png"
            ).name,
            "caption": "Histogram of sampled angles vs the exact density p_n(θ) ∝ sin^(n−2)θ.",
        },
        {
            "file": pictures.plot_angle_variance(
                {n: (r["mc"], r["mc_se"]) for n, r in var_rows.items()},
                {n: float(v) for n, v in ARTICLE_VAR.items()},
                out_dir / "variance.png",
            ).name,
            "caption": "Var(θ): quadrature, Monte Carlo, Laplace 1/(n−2) and the article's values.",
        },
        {
            "file": pictures.plot_orthogonality(
                ortho, cfg.tall_factor, out_dir / "orthogonality.png"
            ).name,
            "caption": "Entry-wise orthogonality error ≈ 1/n (left) vs singular-value extremes (right).",
        },
        {
            "file": pictures.plot_norm_propagation(
                norms,
                out_dir / "norms.png",
                rows={
                    "constant": f"width {cfg.mlp_width}",
                    "alternating": f"width {cfg.mlp_width}↔{cfg.alt_factor * cfg.mlp_width}",
                },
                title=f"Activation norm through a {cfg.depth}-layer MLP, mean of log10 over "
                f"{cfg.nets} network(s) (y-axis clipped to [-12, 8])",
            ).name,
            "caption": f"log10 activation norm ratio through {cfg.depth} layers per initialiser.",
        },
    ]

    # --- comparison with the article and the variance table
    comparison, var_table = [], []
    quad_err = []
    for n, r in var_rows.items():
        if n in ARTICLE_VAR:
            digits = len(ARTICLE_VAR[n].split(".")[1])
            ours = f"{r['quad']:.{digits}f}"
            quad_err.append(abs(r["quad"] - float(ARTICLE_VAR[n])))
            comparison.append(
                {
                    "quantity": f"Var(θ), n={n}",
                    "article": ARTICLE_VAR[n],
                    "ours": ours,
                    "note": f"quadrature; Monte Carlo {r['mc']:.6g} ± {r['mc_se']:.2g}, "
                    f"Laplace {r['laplace']:.6g}",
                }
            )
        var_table.append(
            [
                n,
                ARTICLE_VAR.get(n),
                f"{r['quad']:.9g}",
                r["mc"],
                r["mc_se"],
                r["laplace"],
                (r["laplace"] - r["quad"]) / r["quad"],
            ]
        )
    mc_z = max(abs(r["mc"] - r["quad"]) / r["mc_se"] for r in var_rows.values())
    lap_rel = max(abs(r["laplace"] - r["quad"]) / r["quad"] for n, r in var_rows.items() if n >= 50)
    comparison.append(
        {
            "quantity": f"mean (WᵀW − I)², Gaussian {o100['n']}×{o100['n']}, var 1/n",
            "article": "≈ 0.01 (n = 100)",
            "ours": f"{o100['gauss_mse']:.4g}",
            "note": f"theory (n+1)/n² = {(o100['n'] + 1) / o100['n'] ** 2:.4g}; but σ_min = "
            f"{o100['gauss_min']:.3g}, σ_max = {o100['gauss_max']:.3g}",
        }
    )
    final = {
        p: {a: {s: 10 ** v[-1] for s, v in d2.items()} for a, d2 in d1.items()}
        for p, d1 in norms.items()
    }  # geometric mean over networks
    comparison.append(
        {
            "quantity": f"‖h_{cfg.depth}‖/‖x‖, linear MLP, Su 1/m (constant width)",
            "article": "≈ 1 (norm preserved)",
            "ours": _fmt(final["constant"]["linear"]["Su 1/fan_out"]),
            "note": f"×2 var: {_fmt(final['constant']['linear']['Su x2 var'])}, ×0.5 var: "
            f"{_fmt(final['constant']['linear']['Su x0.5 var'])}",
        }
    )
    comparison.append(
        {
            "quantity": f"‖h_{cfg.depth}‖/‖x‖, ReLU MLP, Su rule doubled (2/m)",
            "article": "≈ 1 (double the variance for ReLU)",
            "ours": _fmt(final["constant"]["relu"]["Su x2 var"]),
            "note": f"without doubling: {_fmt(final['constant']['relu']['Su 1/fan_out'])}",
        }
    )

    schemes = [s[0] for s in SCHEMES]
    norm_rows = [[s] + [final[p][a][s] for p in final for a in ACTIVATIONS] for s in schemes]
    norm_cols = ["scheme"] + [
        f"{a} ({'const' if p == 'constant' else 'alt'})" for p in final for a in ACTIVATIONS
    ]
    tables = [
        {
            "title": f"‖h_{cfg.depth}‖ / ‖x‖ after {cfg.depth} layers, geometric mean over "
            f"{cfg.nets} network(s) (const: width {cfg.mlp_width}; alt: {cfg.mlp_width}↔"
            f"{cfg.alt_factor * cfg.mlp_width})",
            "columns": norm_cols,
            "rows": norm_rows,
        },
        {
            "title": "Var(θ) between two random vectors in R^n",
            "columns": [
                "n",
                "article",
                "quadrature",
                "Monte Carlo",
                "MC s.e.",
                "Laplace 1/(n-2)",
                "Laplace rel. err",
            ],
            "rows": var_table,
        },
        {
            "title": "Angle samples vs exact CDF (Kolmogorov-Smirnov)",
            "columns": ["n", "samples", "KS D", "p-value"],
            "rows": [[n, cfg.angle_samples, d, p] for n, (d, p) in ks.items()],
        },
        {
            "title": "Orthogonality vs width (variance-1/n matrices; tall = "
            f"{cfg.tall_factor}n×n with variance 1/m)",
            "columns": [
                "n",
                "Gauss mean (WᵀW−I)²",
                "(n+1)/n²",
                "uniform mean (WᵀW−I)²",
                "(n−0.2)/n²",
                "Gauss σ_min",
                "Gauss σ_max",
                "uniform σ_min",
                "uniform σ_max",
                "tall σ_min",
                "tall σ_max",
                "QR ‖WᵀW−I‖_F",
            ],
            "rows": [
                [
                    r["n"],
                    r["gauss_mse"],
                    (r["n"] + 1) / r["n"] ** 2,
                    r["unif_mse"],
                    (r["n"] - 0.2) / r["n"] ** 2,
                    r["gauss_min"],
                    r["gauss_max"],
                    r["unif_min"],
                    r["unif_max"],
                    r["tall_min"],
                    r["tall_max"],
                    r["orth_fro"],
                ]
                for r in ortho
            ],
        },
    ]

    metrics: dict[str, Any] = {
        "var_table_max_abs_err_quad": max(quad_err) if quad_err else math.nan,
        "var_table_all_digits_match": all(
            c["article"] == c["ours"] for c in comparison if c["quantity"].startswith("Var")
        ),
        "var_mc_max_abs_z": mc_z,
        "laplace_max_rel_err_n_ge_50": lap_rel,
        "ks_max_D": max(d for d, _ in ks.values()),
        "ks_min_p": min(p for _, p in ks.values()),
        f"gauss_mse_n{o100['n']}": o100["gauss_mse"],
        f"gauss_sv_min_n{ortho[-1]['n']}": ortho[-1]["gauss_min"],
        f"gauss_sv_max_n{ortho[-1]['n']}": ortho[-1]["gauss_max"],
        "orth_max_fro_err": max(r["orth_fro"] for r in ortho),
    }
    for p in final:
        for a in final[p]:
            for s, v in final[p][a].items():
                metrics[f"norm_ratio/{p}/{a}/{s}"] = v
    lin = final["constant"]["linear"]
    headline = (
        f"Var(θ) recomputed by quadrature matches all {len(quad_err)} article values to the "
        f"printed digits (max |Δ| = {max(quad_err):.1e}); through {cfg.depth} linear layers "
        f"the norm ratio is {_fmt(lin['Su 1/fan_out'])} with Su's 1/m rule and "
        f"{_fmt(lin['orthogonal'])} with orthogonal init, but {_fmt(lin['Su x2 var'])} / "
        f"{_fmt(lin['Su x0.5 var'])} with ×2 / ×0.5 variance; square Gaussian matrices are "
        f"orthogonal only entry-wise (σ_min = {ortho[-1]['gauss_min']:.2g} at n = {ortho[-1]['n']})."
    )
    alt = final["alternating"]["linear"]
    notes = [
        "The angle article was read via a machine translation; its variance table is reproduced "
        "digit for digit by quadrature (composite Gauss-Legendre, float64).",
        "At constant width Su's 1/fan_out, LeCun's 1/fan_in and Xavier coincide (all 1/d); the "
        f"alternating-width rows separate them: linear, {cfg.mlp_width}↔"
        f"{cfg.alt_factor * cfg.mlp_width}: Su {_fmt(alt['Su 1/fan_out'])}, LeCun "
        f"{_fmt(alt['LeCun 1/fan_in'])} (preserves per-coordinate scale, so the norm oscillates "
        f"by √{cfg.alt_factor}), Xavier {_fmt(alt['Xavier 2/(in+out)'])} (drifts).",
        "tanh with the linear rule decays polynomially (tanh is contractive, q_l ~ 1/l), not "
        "exponentially; ×2 variance saturates instead of exploding. For ReLU only the doubled "
        "variance (He, or 'Su x2 var' = Su's 2/m) preserves the norm.",
        "'PyTorch default' keeps its uniform biases (kaiming_uniform a=√5 weights, Var = "
        "1/(3 fan_in)): the weights shrink the signal by ≈ 1/√3 per layer and the final norm is "
        "set by the biases, i.e. the input signal is lost even where the norm plateaus.",
        "Square Gaussian/uniform matrices with variance 1/n are near-orthogonal entry-wise and for "
        "fixed vectors, but their singular values fill [0, 2] (quarter-circle law), so they are "
        "not isometries; tall matrices and QR-orthogonal ones are.",
        "Orthogonal init with gain 1 is an isometry only for square and tall layers: a wide "
        "layer (m < n) with orthonormal rows is a projection and keeps m/n of the squared norm "
        "(the 'alt' column: (1/alt_factor)^(depth/4) in norm); Su's 1/m rule corresponds to "
        "gain √(n/m) there.",
        f"Every norm ratio is a geometric mean over {cfg.nets} independently initialised "
        "networks; for a single network the log-norm fluctuates (relative variance of "
        "‖Wx‖²/‖x‖² is 2/m per layer for Gaussian W, larger after ReLU), so equal-variance "
        "schemes give different single-network numbers at small width.",
        "Norm-preserving schemes still sit slightly below 1 in the geometric mean: "
        "E‖Wx‖² = ‖x‖² holds for the squared norm, but E log(χ²_m/m) ≈ −1/m, so the log-norm drifts "
        f"by ≈ −L/(2m) for linear layers (exp(−{cfg.depth}/(2·{cfg.mlp_width})) = "
        f"{math.exp(-cfg.depth / (2 * cfg.mlp_width)):.3f}) and ≈ −1.25 L/m after ReLU "
        f"(exp(−1.25·{cfg.depth}/{cfg.mlp_width}) = "
        f"{math.exp(-1.25 * cfg.depth / cfg.mlp_width):.3f}); a finite-width effect that vanishes "
        "as m grows.",
    ]
    return {
        "headline": headline,
        "metrics": metrics,
        "comparison": comparison,
        "tables": tables,
        "plots": plots,
        "notes": notes,
    }
