"""Top Hessian eigenvalue, Hutchinson trace and HVPs against closed forms (quadratic), a dense
autograd Hessian (MLP with BatchNorm in train mode) and the PyHessian peer."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.analysis import (
    HessianEigen,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
)

from ._models import (
    Quadratic,
    ce_loss,
    cnn,
    image_batch,
    mlp,
    quadratic_loss,
    random_symmetric,
    vector_batch,
)

METHODS = ("autograd", "func")


def _quad(n: int, seed: int, indefinite: bool = False, A: torch.Tensor | None = None):
    A = random_symmetric(n, seed, indefinite) if A is None else A
    g = torch.Generator().manual_seed(seed + 7)
    theta = torch.randn(n, generator=g, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    return Quadratic(theta), (A, c)


@given(n=st.integers(2, 10), seed=st.integers(0, 1000), scale=st.floats(1e-3, 1e3))
def test_top_eigenvalue_of_quadratic(n, seed, scale):
    _check_top_eigenvalue("autograd", n, seed, scale)


@settings(max_examples=6)  # the reference path is slower per product; fewer examples suffice
@given(n=st.integers(2, 10), seed=st.integers(0, 1000), scale=st.floats(1e-3, 1e3))
def test_top_eigenvalue_of_quadratic_func(n, seed, scale):
    _check_top_eigenvalue("func", n, seed, scale)


def _check_top_eigenvalue(method, n, seed, scale):
    A = random_symmetric(n, seed) * scale
    model, batch = _quad(n, seed, A=A)
    res = hessian_top_eigenvalue(model, quadratic_loss, batch, iters=400, tol=1e-12, method=method)
    assert isinstance(res, HessianEigen) and res.converged
    lam = torch.linalg.eigvalsh(A)  # oracle: dense symmetric eigensolver
    assert res.eigenvalue == pytest.approx(float(lam[-1]), rel=1e-8)
    v = torch.cat([t.reshape(-1) for t in res.eigenvector])
    assert float(v.norm()) == pytest.approx(1.0, rel=1e-10)
    torch.testing.assert_close(A @ v, lam[-1] * v, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenvalue_when_a_negative_eigenvalue_dominates(method):
    A = random_symmetric(7, 3, indefinite=True)  # spectrum: -8, 0.5..3, 5
    model, batch = _quad(7, 3, A=A)
    res = hessian_top_eigenvalue(model, quadratic_loss, batch, iters=1000, tol=1e-13, method=method)
    assert res.eigenvalue == pytest.approx(5.0, rel=1e-7)
    assert res.converged and res.iterations > 2


def test_tol_zero_runs_exactly_iters_and_iteration_cap_reports_not_converged():
    model, batch = _quad(6, 0)
    res = hessian_top_eigenvalue(model, quadratic_loss, batch, iters=7, tol=0)
    assert res.iterations == 7 and not res.converged
    loose = hessian_top_eigenvalue(model, quadratic_loss, batch, iters=200, tol=1e-2)
    assert loose.converged and loose.iterations < 200


@pytest.mark.parametrize("method", METHODS)
def test_hvp_of_quadratic_is_Av(method):
    model, batch = _quad(8, 1)
    A = batch[0]
    g = torch.Generator().manual_seed(5)
    v = torch.randn(8, generator=g, dtype=torch.float64)
    k = model.w.numel()
    hv = hessian_vector_product(
        model, quadratic_loss, batch, [v[:k].reshape(k, 1), v[k:]], method=method
    )
    torch.testing.assert_close(torch.cat([hv[0].reshape(-1), hv[1]]), A @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("method", "seed"), [("autograd", 0), ("autograd", 1), ("autograd", 2), ("func", 0)]
)
def test_hutchinson_trace_within_its_standard_error(method, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(12, 12, generator=g, dtype=torch.float64)
    A = M + M.T  # dense: off-diagonal entries make the estimator noisy
    model, batch = _quad(12, seed, A=A)
    gen = torch.Generator().manual_seed(100 + seed)
    n = 400 if method == "autograd" else 200
    est = hessian_trace(model, quadratic_loss, batch, samples=n, method=method, generator=gen)
    assert est.samples == n and est.stderr > 0
    assert abs(est.value - float(A.trace())) < 4 * est.stderr
    # Rademacher variance 2 sum_{i != j} A_ij^2: the s.e. estimates the true one
    true_se = (2 * (A.square().sum() - A.diag().square().sum()) / n) ** 0.5
    assert est.stderr == pytest.approx(float(true_se), rel=0.2)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    A = torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64))
    model, batch = _quad(8, 0, A=A)
    est = hessian_trace(model, quadratic_loss, batch, samples=5)
    assert est.value == pytest.approx(36.0, rel=1e-12) and est.stderr == 0.0


def _dense_hessian(model, batch):
    """Independent oracle: torch.autograd.functional.hessian over the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ref = copy.deepcopy(model)
    for m in ref.modules():  # batch statistics without touching running stats
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False

    def f(flat):
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        x, y = batch
        out = torch.func.functional_call(ref, params, (x,))
        return torch.nn.functional.cross_entropy(out, y)

    return torch.autograd.functional.hessian(f, flat0)


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("method", METHODS)
def test_mlp_against_dense_hessian_in_train_mode(bn, method):
    torch.manual_seed(0)
    model = mlp(bn).double().train()
    batch = vector_batch()
    H = _dense_hessian(model, batch)
    lam = torch.linalg.eigvalsh(H)
    if method == "autograd":  # the func path's power iteration is covered on quadratics
        res = hessian_top_eigenvalue(model, ce_loss, batch, iters=3000, tol=1e-12)
        assert res.eigenvalue == pytest.approx(float(lam[-1]), rel=1e-6)
    est = hessian_trace(
        model, ce_loss, batch, samples=300 if method == "autograd" else 60, method=method
    )
    assert abs(est.value - float(H.trace())) < 4 * est.stderr
    v = [torch.randn_like(p) for p in model.parameters()]
    hv = hessian_vector_product(model, ce_loss, batch, v, method=method)
    flat_v = torch.cat([t.reshape(-1) for t in v])
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in hv]), H @ flat_v)


def test_methods_agree_on_a_bn_cnn_in_train_mode():
    torch.manual_seed(0)
    model = cnn(bn=True).train()
    batch = image_batch()
    a = hessian_top_eigenvalue(model, ce_loss, batch, iters=30, tol=0)
    b = hessian_top_eigenvalue(model, ce_loss, batch, iters=30, tol=0, method="func")
    assert a.eigenvalue == pytest.approx(b.eigenvalue, rel=1e-4)
    ta = hessian_trace(model, ce_loss, batch, samples=4)
    tb = hessian_trace(model, ce_loss, batch, samples=4, method="func")
    assert ta.value == pytest.approx(tb.value, rel=1e-4)


@pytest.mark.filterwarnings(r"ignore:Using backward\(\) with create_graph=True")
def test_against_pyhessian_on_a_small_mlp():
    pyhessian = pytest.importorskip("pyhessian")  # the [peers] extra
    torch.manual_seed(0)
    model = mlp(bn=True).train()
    with torch.no_grad():
        model(vector_batch(64, seed=3, dtype=torch.float32)[0])  # non-trivial running statistics
    x, y = vector_batch(32, dtype=torch.float32)
    # PyHessian calls model.eval() (running-statistics BN) and leaves graphs in .grad: give it a copy
    theirs_model = copy.deepcopy(model)
    torch.manual_seed(0)
    h = pyhessian.hessian(theirs_model, torch.nn.functional.cross_entropy, data=(x, y), cuda=False)
    theirs, _ = h.eigenvalues(maxIter=500, tol=1e-7)
    model.eval()
    ours = hessian_top_eigenvalue(model, ce_loss, (x, y), iters=500, tol=1e-7)
    assert theirs[0] > 0
    assert ours.eigenvalue == pytest.approx(theirs[0], rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"iters": 0}, ValueError, "iters must be >= 1"),
        ({"iters": 2.0}, TypeError, "iters must be an int"),
        ({"tol": -1.0}, ValueError, "tol must be a finite number >= 0"),
        ({"tol": float("nan")}, ValueError, "tol must be"),
        ({"method": "lanczos"}, ValueError, "method must be one of"),
    ],
)
def test_bad_eigen_arguments(kwargs, exc, match):
    model, batch = _quad(4, 0)
    with pytest.raises(exc, match=match):
        hessian_top_eigenvalue(model, quadratic_loss, batch, **kwargs)


def test_bad_trace_and_hvp_arguments():
    model, batch = _quad(4, 0)
    with pytest.raises(ValueError, match="samples must be >= 2"):
        hessian_trace(model, quadratic_loss, batch, samples=1)
    with pytest.raises(ValueError, match="method must be one of"):
        hessian_trace(model, quadratic_loss, batch, method="x")
    with pytest.raises(ValueError, match="vector must have 2 tensors"):
        hessian_vector_product(model, quadratic_loss, batch, [torch.ones(4)])
    with pytest.raises(ValueError, match=r"vector\[1\] must have shape \(2,\)"):
        hessian_vector_product(model, quadratic_loss, batch, [torch.ones(2, 1), torch.ones(3)])
    with pytest.raises(TypeError, match="vector must be a sequence"):
        hessian_vector_product(model, quadratic_loss, batch, torch.ones(4))
    frozen = Quadratic(torch.ones(4, dtype=torch.float64)).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        hessian_top_eigenvalue(frozen, quadratic_loss, batch)
    for fn in (hessian_top_eigenvalue, hessian_trace):
        with pytest.raises(ValueError, match="scalar loss"):
            fn(model, lambda m, b: m.flat(), batch)


def test_linear_loss_has_zero_curvature():
    model, batch = _quad(4, 0)
    lin = lambda m, b: b[1] @ m.flat()  # noqa: E731
    assert hessian_top_eigenvalue(model, lin, batch).eigenvalue == 0.0
    assert hessian_trace(model, lin, batch, samples=3).value == 0.0


def test_init_start_vector_and_its_validation():
    model, batch = _quad(6, 2)
    A = batch[0]
    _, vecs = torch.linalg.eigh(A)
    top = vecs[:, -1] * 3.0  # the top eigenvector (unnormalised): converges at once
    k = model.w.numel()
    res = hessian_top_eigenvalue(
        model, quadratic_loss, batch, iters=50, tol=1e-12, init=[top[:k].reshape(k, 1), top[k:]]
    )
    assert res.iterations == 2 and res.eigenvalue == pytest.approx(5.0, rel=1e-10)
    with pytest.raises(ValueError, match="init must have a finite, non-zero norm"):
        hessian_top_eigenvalue(
            model, quadratic_loss, batch, init=[torch.zeros(k, 1), torch.zeros(6 - k)]
        )
    with pytest.raises(ValueError, match="init must have 2 tensors"):
        hessian_top_eigenvalue(model, quadratic_loss, batch, init=[top])
