"""All drawing of the project: the one module that imports matplotlib (Agg backend, no display).

Experiments compute their numbers and pass plain data (tensors, lists, dicts) here; functions that
need an article's maths take it as a callable, so this module imports no part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


def figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 4.0, **kw: Any):
    """``plt.subplots`` with a consistent size per panel; returns ``(fig, axes)``."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def save(fig: Any, path: str | Path) -> str:
    """Save ``fig`` as PNG (tight layout), close it, and return the file name."""
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path.name


def line_panels(
    panels: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    suptitle: str = "",
    width: float = 5.5,
    height: float = 4.0,
) -> str:
    """One row of line-plot panels; returns the PNG's file name.

    Args:
        panels: one dict per panel: ``series`` ({label: (xs, ys)}), and optional ``title``,
            ``xlabel``, ``ylabel``, ``logx``, ``logy`` (bools), ``style`` (default ``"o-"``),
            ``hlines`` ({label: y}).
        path: PNG file to write.
        suptitle: figure title.
    """
    fig, axes = figure(1, len(panels), width=width, height=height)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in panel["series"].items():
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y == y]
            if pts:
                ax.plot(*zip(*pts, strict=True), panel.get("style", "o-"), ms=3, label=label)
        for label, y in panel.get("hlines", {}).items():
            ax.axhline(y, ls="--", color="gray", lw=1, label=label)
        if panel.get("logx"):
            ax.set_xscale("log")
        if panel.get("logy"):
            ax.set_yscale("log")
        ax.set(
            title=panel.get("title", ""),
            xlabel=panel.get("xlabel", ""),
            ylabel=panel.get("ylabel", ""),
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    return save(fig, path)


def mask_images(
    images: Sequence[tuple[torch.Tensor, str]],
    path: str | Path,
    *,
    suptitle: str = "",
) -> str:
    """Attention-pattern pictures: row = query, column = key; 0 blank, 1 blue, 2 orange.

    Args:
        images: ``(img (n, n) int tensor with values in {0, 1, 2}, title)`` per panel, e.g.
            from :func:`kexue.attention.pattern_picture`.
        path: PNG file to write.
        suptitle: figure title.
    """
    fig, axes = figure(1, len(images), width=2.6, height=3.0)
    cmap = ListedColormap(["#f4f4f4", "#1f77b4", "#ff7f0e"])
    for ax, (img, title) in zip(axes[0], images, strict=True):
        n = img.shape[-1]
        ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_xticks([x - 0.5 for x in range(1, n)], minor=True)
        ax.set_yticks([x - 0.5 for x in range(1, n)], minor=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.grid(which="major", visible=False)
        ax.tick_params(which="both", length=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key j", fontsize=8)
        ax.set_ylabel("query i", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return save(fig, path)


def bar_panels(
    panels: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    suptitle: str = "",
    width: float = 5.0,
    height: float = 3.6,
) -> str:
    """One row of bar-chart panels; returns the PNG's file name.

    Args:
        panels: one dict per panel: ``bars`` ({label: value or ``(value, error)``}; ``None``
            values are left out), and optional ``title``, ``ylabel``.
        path: PNG file to write.
        suptitle: figure title.
    """
    fig, axes = figure(1, len(panels), width=width, height=height)
    for ax, panel in zip(axes[0], panels, strict=True):
        items = [(k, v if isinstance(v, tuple) else (v, 0.0)) for k, v in panel["bars"].items()]
        items = [(k, v) for k, v in items if v[0] is not None and v[0] == v[0]]
        if items:
            xs = range(len(items))
            ax.bar(xs, [v for _, (v, _) in items], yerr=[e for _, (_, e) in items], capsize=3)
            ax.set_xticks(list(xs), [k for k, _ in items], rotation=30, ha="right", fontsize=8)
        ax.set_title(panel.get("title", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
    if suptitle:
        fig.suptitle(suptitle)
    return save(fig, path)


# ---------------------------------------------------------------- article 7 (init geometry)
def plot_angle_histograms(
    samples: dict[int, torch.Tensor],
    path: str | Path,
    *,
    pdf: Callable[[torch.Tensor, int], torch.Tensor],
    variance: Callable[[int], float],
) -> Path:
    r"""Small multiples: histogram of sampled angles vs the exact density $p_n(\theta)$.

    Each panel spans $\pi/2\pm5$ sd; for $n\ge10$ the Laplace approximation
    $\mathcal N(\pi/2, 1/(n-2))$ is drawn dashed.

    Args:
        samples: ``{n: angles}``, each a tensor of shape ``(size,)`` in radians.
        path: PNG file to write.
        pdf: ``pdf(theta, n)``, the exact density (``kexue.init.angle_pdf``).
        variance: ``variance(n)``, the exact variance (``kexue.init.angle_variance``).

    Returns:
        ``Path(path)``.
    """
    dims = list(samples)
    fig, axes = plt.subplots(1, len(dims), figsize=(3.2 * len(dims), 3.4), squeeze=False)
    for ax, n in zip(axes[0], dims):
        a = samples[n]
        sd = math.sqrt(variance(n))
        lo, hi = max(0.0, math.pi / 2 - 5 * sd), min(math.pi, math.pi / 2 + 5 * sd)
        ax.hist(a.numpy(), bins=60, range=(lo, hi), density=True, color="tab:blue", alpha=0.45,
                label=f"{a.numel():,} samples")  # fmt: skip
        t = torch.linspace(lo, hi, 400, dtype=torch.float64)
        ax.plot(t, pdf(t, n), "k-", lw=1.5, label=r"exact $p_n(\theta)$")
        if n >= 10:
            # Laplace: N(pi/2, 1/(n-2))
            lap = torch.exp(-((t - math.pi / 2) ** 2) * (n - 2) / 2) * math.sqrt(
                (n - 2) / 2 / math.pi
            )
            ax.plot(t, lap, "r--", lw=1, label="Laplace N(π/2, 1/(n-2))")
        ax.set_title(f"n = {n}")
        ax.set_xlabel("θ (rad)")
        ax.axvline(math.pi / 2, color="gray", lw=0.5)
    axes[0, 0].set_ylabel("density")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(
        "Angle between two random Gaussian vectors in $\\mathbb{R}^n$ (x-range: π/2 ± 5 sd)"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_angle_variance(
    mc: dict[int, tuple[float, float]],
    article: dict[int, float],
    path: str | Path,
    *,
    variance: Callable[[int], float],
) -> Path:
    r"""$\mathrm{Var}_n(\theta)$ vs n (log-log): quadrature, Laplace $1/(n-2)$, Monte Carlo, article.

    Args:
        mc: ``{n: (variance, standard error)}`` from Monte Carlo.
        article: ``{n: value}`` printed in the article.
        path: PNG file to write.
        variance: ``variance(n)``, the exact variance by quadrature.

    Returns:
        ``Path(path)``.
    """
    ns = sorted(mc)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    grid = [n for n in range(3, max(ns + list(article)) + 1) if n < 30 or n % 10 == 0]
    ax.loglog(grid, [variance(n) for n in grid], "k-", label="quadrature")
    ax.loglog(grid, [1 / (n - 2) for n in grid], "r--", label="Laplace 1/(n-2)")
    ax.errorbar(ns, [mc[n][0] for n in ns], yerr=[2 * mc[n][1] for n in ns], fmt="o", ms=4,
                color="tab:blue", label="Monte Carlo (±2 se)")  # fmt: skip
    ax.loglog(list(article), list(article.values()), "x", color="tab:orange", ms=9, label="article")
    ax.set_xlabel("n")
    ax.set_ylabel("Var(θ)")
    ax.set_title("Variance of the angle between random vectors")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_orthogonality(rows: list[dict[str, float]], tall_factor: int, path: str | Path) -> Path:
    r"""Left: mean $(W^\top W-I)^2$ entry vs n against $(n+1)/n^2$ (Gaussian) and
    $(n-0.2)/n^2$ (uniform). Right: singular-value extremes vs n (square Gaussian/uniform fill
    $[0,2]$; tall ``tall_factor``·n × n stays in $1\pm\sqrt{n/m}$; QR orthogonal is 1).

    Args:
        rows: one dict per width with keys ``n, gauss_mse, unif_mse, orth_mse, gauss_min,
            gauss_max, unif_min, unif_max, tall_min, tall_max``.
        tall_factor: m / n of the tall matrices.
        path: PNG file to write.

    Returns:
        ``Path(path)``.
    """
    n = [r["n"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.loglog(n, [r["gauss_mse"] for r in rows], "o", color="tab:blue", label="Gaussian 1/n")
    a1.loglog(n, [(k + 1) / k**2 for k in n], "-", color="tab:blue", lw=0.8, label="(n+1)/n²")
    a1.loglog(n, [r["unif_mse"] for r in rows], "s", color="tab:green", mfc="none",
              label="uniform 1/n")  # fmt: skip
    a1.loglog(n, [(k - 0.2) / k**2 for k in n], "--", color="tab:green", lw=0.8, label="(n-0.2)/n²")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("n")
    a1.set_ylabel("mean of (WᵀW − I)² entries")
    worst = max(r["orth_mse"] for r in rows)
    a1.set_title(f"Entry-wise: error ≈ 1/n  (QR orthogonal: ≤ {worst:.0e})")
    a1.legend(fontsize=8)
    for key, style, color, label in [
        ("gauss", "o-", "tab:blue", "square Gaussian"),
        ("unif", "s--", "tab:green", "square uniform"),
        ("tall", "d-", "tab:purple", f"tall {tall_factor}n×n Gaussian 1/m"),
    ]:
        a2.plot(n, [r[f"{key}_max"] for r in rows], style, color=color, mfc="none", label=label)
        a2.plot(n, [r[f"{key}_min"] for r in rows], style, color=color, mfc="none")
    band = math.sqrt(1 / tall_factor)
    a2.axhspan(1 - band, 1 + band, color="tab:purple", alpha=0.1, label="1 ± √(n/m)")
    a2.axhline(1.0, color="tab:red", label="orthogonal (QR)")
    a2.set_xscale("log", base=2)
    a2.set_ylim(-0.05, 2.25)
    a2.set_xlabel("n")
    a2.set_ylabel("largest / smallest singular value")
    a2.set_title("Operator norm: square random matrices are not isometries")
    a2.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 0.06), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_norm_propagation(
    curves: dict[str, dict[str, dict[str, list[float]]]],
    path: str | Path,
    *,
    rows: dict[str, str] | None = None,
    title: str = "Activation norm through depth",
) -> Path:
    r"""Grid of $\log_{10}\lVert h_l\rVert/\lVert x\rVert$ vs layer l, one line per scheme.

    Args:
        curves: ``curves[row][column][scheme] = [log10 ratio at layer 0, 1, ..., L]`` (grid rows,
            e.g. width patterns; columns, e.g. activations).
        path: PNG file to write.
        rows: optional display names for the row keys.
        title: figure title.

    Returns:
        ``Path(path)``.
    """
    rows = rows or {}
    ncols = max(len(v) for v in curves.values())
    fig, axes = plt.subplots(len(curves), ncols, figsize=(4.7 * ncols, 3.75 * len(curves)),
                             sharex=True, squeeze=False)  # fmt: skip
    colors = plt.get_cmap("tab10").colors
    for i, (rname, per_col) in enumerate(curves.items()):
        for j, (cname, per_scheme) in enumerate(per_col.items()):
            ax = axes[i, j]
            for k, (label, vals) in enumerate(per_scheme.items()):
                ls = "--" if " x" in label else "-"  # variance-scaled variants dashed
                ax.plot(range(len(vals)), vals, color=colors[k % 10], ls=ls, lw=1.4, label=label)
            ax.axhline(0, color="gray", lw=0.5)
            ax.set_ylim(-12, 8)
            ax.set_title(f"{cname}, {rows.get(rname, rname)}")
            if j == 0:
                ax.set_ylabel("log10 ‖h_l‖ / ‖x‖")
            if i == len(curves) - 1:
                ax.set_xlabel("layer l")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def image_rows(rows: list[tuple[str, Any]], path: str | Path, cell: float = 0.55) -> str:
    """Draw rows of small grey or RGB images, one titled row per entry, and save as PNG.

    Args:
        rows: ``(title, images)`` pairs; ``images`` is an array-like ``(n, H, W)`` or
            ``(n, H, W, 3)`` with values in [0, 1] (rows may differ in ``n``).
        path: the PNG to write.
        cell: inches per image.

    Returns:
        The file name written.
    """
    import numpy as np

    arrays = [np.asarray(imgs, dtype=float) for _, imgs in rows]
    ncol = max(len(a) for a in arrays)
    fig, axes = plt.subplots(
        len(rows), ncol, figsize=(cell * ncol + 1.2, cell * len(rows) + 0.3), squeeze=False
    )
    for r, ((title, _), imgs) in enumerate(zip(rows, arrays)):
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(imgs):
                ax.imshow(np.clip(imgs[c], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    return save(fig, path)
