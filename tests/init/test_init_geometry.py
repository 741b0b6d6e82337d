"""kexue.init.geometry: the angle law of random vectors and matrix diagnostics (design note §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import betainc
from torch import nn

from kexue.init import (
    angle_cdf,
    angle_pdf,
    angle_variance,
    cos_angle_pdf,
    norm_propagation,
    orthogonality_stats,
    sample_angles,
    singular_values,
)

# the article's table (Su, 2019-11-13), digits as printed
ARTICLE = {
    3: "0.467401",
    10: "0.110661",
    20: "0.0525832",
    50: "0.0204053",
    100: "0.0101007",
    200: "0.00502508",
    1000: "0.001001",
}


def _quad(f, a: float, b: float, n: int) -> float:
    """scipy adaptive quadrature around the peak at pi/2 (an independent integrator)."""
    pts = [math.pi / 2] if a < math.pi / 2 < b else None
    return integrate.quad(f, a, b, points=pts, epsabs=1e-13, epsrel=1e-12, limit=500)[0]


@pytest.mark.parametrize("n", [2, 3, 10, 100, 1000])
def test_angle_pdf_integrates_to_one(n):
    total = _quad(lambda t: float(angle_pdf(t, n)), 0.0, math.pi, n)
    assert abs(total - 1.0) < 1e-8


@pytest.mark.parametrize("n", [2, 3, 10, 100, 1000])
def test_cos_angle_pdf_integrates_to_one(n):
    # n = 2 has integrable singularities at the ends: use the substitution eta = sin(u)
    total = _quad(
        lambda u: float(cos_angle_pdf(math.sin(u), n)) * math.cos(u), -math.pi / 2, math.pi / 2, n
    )
    assert abs(total - 1.0) < 1e-8


def test_special_cases():
    t = torch.linspace(0.1, 3.0, 7, dtype=torch.float64)
    assert torch.allclose(angle_pdf(t, 2), torch.full_like(t, 1 / math.pi), atol=0, rtol=1e-15)
    e = torch.linspace(-0.99, 0.99, 7, dtype=torch.float64)
    assert torch.allclose(cos_angle_pdf(e, 3), torch.full_like(e, 0.5), atol=0, rtol=1e-15)
    # change of variables: p(theta) = p(eta) * sin(theta)
    for n in (4, 17, 300):
        assert torch.allclose(
            angle_pdf(t, n), cos_angle_pdf(torch.cos(t), n) * torch.sin(t), rtol=1e-12, atol=1e-300
        )
    # symmetric about pi/2, zero outside [0, pi], no underflow trouble for huge n
    assert torch.allclose(angle_pdf(t, 50), angle_pdf(math.pi - t, 50), rtol=1e-12)
    assert float(angle_pdf(-0.1, 5)) == 0.0 and float(angle_pdf(3.2, 5)) == 0.0
    peak = float(angle_pdf(math.pi / 2, 10_000))
    assert math.isfinite(peak) and abs(peak - math.sqrt(9998 / (2 * math.pi))) / peak < 1e-3
    assert float(angle_pdf(0.3, 10_000)) == 0.0  # underflows to exactly 0, never NaN
    e = torch.tensor([-1.0, -0.5, 0.0, 0.01, 1.0], dtype=torch.float64)
    big = cos_angle_pdf(e, 10_000)
    assert bool(torch.isfinite(big).all()) and float(big[2]) == pytest.approx(peak)
    assert float(big[0]) == 0.0 and float(big[-1]) == 0.0


@pytest.mark.parametrize("n", list(ARTICLE))
def test_variance_reproduces_article_table(n):
    shown = ARTICLE[n]
    digits = len(shown.split(".")[1])
    ours = angle_variance(n)
    assert f"{ours:.{digits}f}" == shown


def test_variance_closed_forms_and_laplace():
    assert abs(angle_variance(2) - math.pi**2 / 12) < 1e-12
    assert abs(angle_variance(3) - (math.pi**2 - 8) / 4) < 1e-12
    for n in (50, 100, 200, 1000, 10_000):
        lap = angle_variance(n, method="laplace")
        assert abs(lap - angle_variance(n)) / angle_variance(n) < 0.10
        assert lap == 1 / (n - 2)


def test_cdf_matches_incomplete_beta():
    t = torch.linspace(0, math.pi, 301, dtype=torch.float64)
    for n in (2, 3, 20, 200, 5000):
        c = np.cos(t.numpy())
        low = 0.5 * (1 - betainc(0.5, (n - 1) / 2, c**2))
        ref = np.where(t.numpy() <= math.pi / 2, low, 1 - low)
        assert np.abs(angle_cdf(t, n).numpy() - ref).max() < 1e-10


@pytest.mark.parametrize("n", [3, 20, 200])
def test_monte_carlo_matches_law(n):
    size = 200_000
    g = torch.Generator().manual_seed(1234 + n)
    a = sample_angles(n, size, g)
    assert a.shape == (size,) and a.dtype == torch.float64
    assert bool(((a >= 0) & (a <= math.pi)).all())
    var = angle_variance(n)
    # mean: sd = sqrt(var / size); variance: sd ~ sqrt((mu4 - var^2) / size), mu4 <= 3 var^2 here
    assert abs(float(a.mean()) - math.pi / 2) < 3 * math.sqrt(var / size)
    assert abs(float(a.var()) - var) < 3 * math.sqrt(2 * var**2 / size) * 1.3
    ks = stats.kstest(a.numpy(), lambda x: angle_cdf(torch.from_numpy(np.asarray(x)), n).numpy())
    assert ks.pvalue > 1e-3


def test_sample_angles_reproducible_and_validated():
    a = sample_angles(5, 100, torch.Generator().manual_seed(0), chunk=64)
    b = sample_angles(5, 100, torch.Generator().manual_seed(0), chunk=64)
    assert torch.equal(a, b) and a.shape == (100,)
    with pytest.raises(ValueError, match="n must be >= 2"):
        sample_angles(1, 10)
    with pytest.raises(ValueError, match="size"):
        sample_angles(3, 0)
    with pytest.raises(TypeError, match="n must be an int"):
        sample_angles(3.0, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 2"):
        angle_pdf(1.0, 1)
    with pytest.raises(ValueError, match="method"):
        angle_variance(10, method="simpson")
    with pytest.raises(ValueError, match="laplace"):
        angle_variance(2, method="laplace")
    with pytest.raises(TypeError, match="theta"):
        angle_pdf("1.0", 3)
    with pytest.raises(ValueError, match=r"W must have shape \(m, n, \*k\)"):
        orthogonality_stats(torch.ones(5))
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        singular_values(np.ones((3, 3)))
    with pytest.raises(ValueError, match="side"):
        orthogonality_stats(torch.eye(3), side="left")
    with pytest.raises(TypeError, match="model"):
        norm_propagation(lambda x: x, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(b, ...\)"):
        norm_propagation(nn.Identity(), torch.ones(0, 3))


def test_square_gaussian_entrywise_near_orthogonal_but_not_isometry():
    n = 200
    g = torch.Generator().manual_seed(0)
    errs = [
        orthogonality_stats(torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n))
        for _ in range(5)
    ]
    mse = sum(e["mean_sq_error"] for e in errs) / len(errs)
    assert abs(mse - (n + 1) / n**2) / ((n + 1) / n**2) < 0.05  # design note §2.4
    assert all(e["sv_max"] > 1.8 and e["sv_min"] < 0.1 for e in errs)  # quarter-circle law
    assert all(e["mean_abs_cos"] < 3 / math.sqrt(n) for e in errs)


def test_tall_gaussian_singular_values_concentrate():
    n, m = 32, 16 * 32
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sv = singular_values(W / math.sqrt(m))
    assert sv.shape == (n,) and bool((sv[:-1] >= sv[1:]).all())
    band = 2 * math.sqrt(n / m)
    assert float(sv.max()) < 1 + band and float(sv.min()) > 1 - band


def test_orthogonality_stats_identity_and_sides():
    s = orthogonality_stats(torch.eye(4, dtype=torch.bfloat16))
    assert (
        s["fro_error"] == 0 and s["sv_min"] == 1 and s["condition"] == 1 and s["mean_abs_cos"] == 0
    )
    W = torch.eye(6)[:3]  # wide with orthonormal rows
    assert orthogonality_stats(W)["fro_error"] == 0  # auto picks rows
    assert orthogonality_stats(W, side="columns")["fro_error"] == pytest.approx(math.sqrt(3))
    assert orthogonality_stats(torch.zeros(3, 3))["condition"] == math.inf


def test_norm_propagation_hooks():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(2 * torch.eye(4))
    model = nn.Sequential(lin, nn.ReLU(), nn.Identity())
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [3.0, 0.0, 0.0, 4.0]])
    norms = norm_propagation(model, x)
    assert norms == pytest.approx(
        [
            math.sqrt((4 + 25) / 2),
            math.sqrt((16 + 100) / 2),
            math.sqrt((8 + 100) / 2),
            math.sqrt((8 + 100) / 2),
        ]
    )
    assert norm_propagation(model, x, modules=[lin], include_input=False) == pytest.approx(
        [math.sqrt((16 + 100) / 2)]
    )
    assert not lin._forward_hooks  # hooks removed
