"""step_probe against closed forms on a quadratic, and its bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kexue.analysis import StepProbe, step_probe

from ._models import Quadratic, ce_loss, cnn, image_batch, quadratic_loss, random_symmetric


def _setup(n: int, seed: int, indefinite: bool = False, scale: float = 1.0):
    A = random_symmetric(n, seed, indefinite) * scale
    g = torch.Generator().manual_seed(seed + 1)
    theta = torch.randn(n, generator=g, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    return Quadratic(theta), (A, c), theta


@given(
    n=st.integers(2, 9),
    seed=st.integers(0, 10_000),
    indefinite=st.booleans(),
    scale=st.floats(1e-3, 1e3),
    etas=st.lists(st.floats(1e-4, 2.0), min_size=1, max_size=5),
)
def test_quadratic_closed_forms(n, seed, indefinite, scale, etas):
    model, batch, theta = _setup(n, seed, indefinite, scale)
    A, c = batch
    grad = A @ theta + c  # oracle: gradient of 1/2 t^T A t + c^T t
    Ag = A @ grad
    probe = step_probe(model, quadratic_loss, batch, etas)
    assert isinstance(probe, StepProbe)
    L0 = 0.5 * theta @ A @ theta + c @ theta
    assert probe.loss == pytest.approx(float(L0), rel=1e-10, abs=1e-10)
    assert probe.grad_norm == pytest.approx(float(grad.norm()), rel=1e-10)
    e = torch.tensor(etas, dtype=torch.float64)
    # L(theta - eta g) = L - eta |g|^2 + eta^2/2 g^T A g
    expect = L0 - e * grad.dot(grad) + 0.5 * e**2 * grad.dot(Ag)
    tol = 1e-9 * (1 + float(expect.abs().max()))
    torch.testing.assert_close(probe.losses, expect, rtol=1e-9, atol=tol)
    # grad(theta - eta g) - g = -eta A g
    torch.testing.assert_close(probe.grad_changes, e * Ag.norm(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(probe.distances, e * grad.norm(), rtol=1e-12, atol=0)
    # effective beta = |A g| / |g| for every step size (not the Rayleigh quotient g^T A g/|g|^2)
    assert probe.beta == pytest.approx(float(Ag.norm() / grad.norm()), rel=1e-9)
    lo, hi = probe.loss_range
    assert lo == pytest.approx(float(expect.min()), rel=1e-9, abs=tol)
    assert hi == pytest.approx(float(expect.max()), rel=1e-9, abs=tol)
    d = probe.to_dict("p/")
    assert set(d) == {
        f"p/{k}" for k in ("loss", "loss_min", "loss_max", "grad_norm", "grad_change_max", "beta")
    }


def test_beta_is_not_the_rayleigh_quotient():
    model, batch, theta = _setup(6, 3)
    A, c = batch
    grad = A @ theta + c
    probe = step_probe(model, quadratic_loss, batch, [0.1])
    rayleigh = float(grad @ A @ grad / grad.dot(grad))
    assert probe.beta > rayleigh * (1 + 1e-6)  # strictly larger unless g is an eigenvector


def test_zero_gradient_gives_nan_beta():
    A = random_symmetric(4, 0)
    model = Quadratic(torch.zeros(4, dtype=torch.float64))
    probe = step_probe(model, quadratic_loss, (A, torch.zeros(4, dtype=torch.float64)), [0.1, 0.2])
    assert probe.grad_norm == 0 and math.isnan(probe.beta)
    assert probe.losses.tolist() == [0.0, 0.0]


def test_frozen_parameters_are_held_fixed():
    model, batch, theta = _setup(6, 5)
    A, c = batch
    model.w.requires_grad_(False)
    k = model.w.numel()
    grad = (A @ theta + c)[k:]  # only b moves
    probe = step_probe(model, quadratic_loss, batch, [0.3])
    assert probe.grad_norm == pytest.approx(float(grad.norm()), rel=1e-10)
    assert probe.beta == pytest.approx(float((A[k:, k:] @ grad).norm() / grad.norm()), rel=1e-9)


def test_tensor_step_sizes_and_metrics_tuple():
    torch.manual_seed(0)
    model = cnn(bn=True).train()
    batch = image_batch()
    a = step_probe(model, ce_loss, batch, torch.tensor([0.1, 0.5], dtype=torch.float64))
    b = step_probe(model, ce_loss, batch, [0.1, 0.5])
    assert torch.equal(a.losses, b.losses) and a.beta == b.beta
    assert torch.isfinite(a.losses).all() and a.beta > 0 and a.grad_norm > 0


@pytest.mark.parametrize(
    ("steps", "exc", "match"),
    [
        ([], ValueError, "step_sizes must not be empty"),
        (torch.tensor([]), ValueError, "step_sizes must not be empty"),
        ([0.1, -0.1], ValueError, "step_sizes must be finite and > 0"),
        ([0.0], ValueError, "step_sizes must be finite and > 0"),
        ([float("nan")], ValueError, "step_sizes must be finite"),
        ([float("inf")], ValueError, "step_sizes must be finite"),
        (torch.ones(2, 2), ValueError, "step_sizes must be 1-D"),
        ("0.1", TypeError, "step_sizes must be a sequence"),
        (0.1, TypeError, "step_sizes must be a sequence"),
        ([True], TypeError, "step_sizes must contain numbers"),
        (["a"], TypeError, "step_sizes must contain numbers"),
    ],
)
def test_bad_step_sizes(steps, exc, match):
    model, batch, _ = _setup(4, 0)
    with pytest.raises(exc, match=match):
        step_probe(model, quadratic_loss, batch, steps)


def test_bad_model_and_loss():
    model, batch, _ = _setup(4, 0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        step_probe(lambda x: x, quadratic_loss, batch, [0.1])
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        step_probe(model, None, batch, [0.1])
    frozen = Quadratic(torch.ones(4, dtype=torch.float64)).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        step_probe(frozen, quadratic_loss, batch, [0.1])
    with pytest.raises(ValueError, match="no parameters that require grad"):
        step_probe(nn.ReLU(), quadratic_loss, batch, [0.1])
    with pytest.raises(ValueError, match=r"scalar loss .*\(4,\)"):
        step_probe(model, lambda m, b: m.flat() * 2, batch, [0.1])
    with pytest.raises(ValueError, match="scalar loss"):
        step_probe(model, lambda m, b: 1.0, batch, [0.1])
    with pytest.raises(ValueError, match="does not depend on any parameter"):
        step_probe(model, lambda m, b: torch.tensor(1.0), batch, [0.1])
    # a failing probe still leaves the model untouched
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        step_probe(model, lambda m, b: m.flat() * 2, batch, [0.1])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_beta_on_a_non_quadratic_loss_against_a_brute_force_reference():
    """A softplus MLP: the gradient change per unit distance differs from step to step, so
    beta = max_i (not min, not mean, not the last) is pinned down. The reference moves the
    parameters itself and takes gradients with torch.func, in float64."""
    from torch.func import functional_call, grad

    from kexue.analysis import step_probe

    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Softplus(), torch.nn.Linear(5, 1)
    ).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)

    def loss_fn(m, batch):
        xb, yb = batch
        return ((m(xb) - yb) ** 4).mean()  # quartic in the output: far from a quadratic

    etas = [0.01, 0.05, 0.2, 0.6, 1.5]
    probe = step_probe(model, loss_fn, (x, y), etas)

    params = {k: v.detach().clone() for k, v in model.named_parameters()}

    def f(p):
        return ((functional_call(model, p, (x,)) - y) ** 4).mean()

    g = grad(f)(params)
    gnorm = torch.sqrt(sum((t**2).sum() for t in g.values()))
    ratios = []
    for eta in etas:
        moved = {k: params[k] - eta * g[k] for k in params}
        gi = grad(f)(moved)
        change = torch.sqrt(sum(((gi[k] - g[k]) ** 2).sum() for k in params))
        ratios.append(float(change / (eta * gnorm)))
    assert max(ratios) > 1.2 * min(ratios)  # the ratio really varies along the line
    assert probe.beta == pytest.approx(max(ratios), rel=1e-9)
    assert probe.beta != pytest.approx(min(ratios), rel=1e-3)
    assert probe.grad_norm == pytest.approx(float(gnorm), rel=1e-12)


def test_a_nan_batch_is_refused_by_the_probe_and_the_hessian():
    from kexue.analysis import hessian_top_eigenvalue

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x = torch.randn(4, 3)
    x[0, 0] = float("nan")

    def loss_fn(m, b):
        return (m(b) ** 2).mean()

    with pytest.raises(ValueError, match="not finite"):
        step_probe(model, loss_fn, x, [0.1])
    with pytest.raises(ValueError, match="not finite"):
        hessian_top_eigenvalue(model, loss_fn, x)
