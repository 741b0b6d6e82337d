"""kexue.init.schemes: fans, variance targets, norm preservation, orthogonal init (design note §6)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kexue.init import (
    fans,
    geometric_init_,
    he_,
    init_module_,
    lecun_,
    orthogonal_,
    orthogonality_stats,
    xavier_,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- fans
@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (nn.Linear(3, 5), (3, 5)),
        (nn.Conv1d(4, 6, 5), (4 * 5, 6 * 5)),
        (nn.Conv2d(4, 8, 3), (4 * 9, 8 * 9)),
        (nn.Conv2d(4, 8, (3, 5), groups=2), (2 * 15, 4 * 15)),  # grouped: per group
        (nn.Conv2d(8, 8, 3, groups=8), (9, 9)),  # depthwise
        (nn.Conv3d(2, 4, 2), (2 * 8, 4 * 8)),
        # transposed conv, weight stored [in, out/groups, *k]; fans in the module's direction
        (nn.ConvTranspose2d(4, 8, 3), (4 * 9, 8 * 9)),
        (nn.ConvTranspose2d(4, 8, 3, groups=2), (2 * 9, 4 * 9)),
        (nn.Embedding(10, 6), (10, 6)),
    ],
)
def test_fans_hand_computed(layer, expected):
    assert fans(layer) == expected


def test_fans_tensor_convention_and_torch_disagreement():
    # plain tensors follow PyTorch's [out, in, *k] layout (same as torch.nn.init)
    w = torch.empty(8, 4, 3, 3)
    assert fans(w) == (36, 72) == nn.init._calculate_fan_in_and_fan_out(w)
    # ... which is wrong for transposed convs: torch reads the stored [in, out, k] backwards
    t = nn.ConvTranspose2d(4, 8, 3)
    assert tuple(t.weight.shape) == (4, 8, 3, 3)
    assert nn.init._calculate_fan_in_and_fan_out(t.weight) == (72, 36)
    assert fans(t) == (36, 72)
    with pytest.raises(ValueError, match="at least 2 dims"):
        fans(torch.empty(5))
    with pytest.raises(TypeError, match="unsupported module ReLU"):
        fans(nn.ReLU())
    with pytest.raises(TypeError, match="torch.Tensor"):
        fans([[1.0]])


# ---------------------------------------------------------------- variance targets
def _target_var(fan_in: int, fan_out: int, mode: str, gain: float = 1.0) -> float:
    fan = {"fan_in": fan_in, "fan_out": fan_out, "avg": (fan_in + fan_out) / 2}[mode]
    return gain**2 / fan


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_out", "fan_in", "avg"])
def test_geometric_init_hits_target_variance(mode, distribution):
    w = torch.empty(300, 200, 3)  # fan_in = 600, fan_out = 900; 180k entries
    geometric_init_(w, mode=mode, gain=1.5, distribution=distribution, generator=gen(1))
    target = _target_var(600, 900, mode, 1.5)
    assert abs(float(w.mean())) < 4 * math.sqrt(target / w.numel())
    assert abs(float(w.var()) / target - 1) < 0.02
    if distribution == "uniform":
        bound = math.sqrt(3 * target)  # sqrt(3) * std
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound


def test_aliases_state_their_conventions():
    w = torch.empty(400, 100)  # [out, in]: fan_in 100, fan_out 400
    for fn, target in [
        (lambda t: lecun_(t, generator=gen()), 1 / 100),
        (lambda t: xavier_(t, generator=gen()), 2 / 500),
        (lambda t: he_(t, generator=gen()), 2 / 100),
        (lambda t: he_(t, mode="fan_out", generator=gen()), 2 / 400),
        (lambda t: lecun_(t, "uniform", generator=gen()), 1 / 100),
    ]:
        assert fn(w) is w
        assert abs(float(w.var()) / target - 1) < 0.03


def test_module_argument_uses_module_fans():
    t = nn.ConvTranspose2d(16, 64, 3)  # fan_out = 64 * 9 (torch's helper would say 16 * 9)
    out = geometric_init_(t, generator=gen())
    assert out is t.weight
    assert abs(float(t.weight.detach().var()) * 64 * 9 - 1) < 0.05


@settings(deadline=None, max_examples=12)
@given(m=st.integers(4, 96), n=st.integers(4, 96), seed=st.integers(0, 2**16))
def test_expected_squared_norm_for_every_shape(m, n, seed):
    """E||Wx||^2 = m sigma^2 ||x||^2: fan_out gives ratio 1, fan_in gives m/n, for any (m, n)."""
    g = gen(seed)
    lin = nn.Linear(n, m, bias=False).double()
    for mode, expected in (("fan_out", 1.0), ("fan_in", m / n)):
        ratios = []
        for _ in range(40):  # fresh W and x each trial: ratio ~ expected * chi2_m / m
            geometric_init_(lin, mode=mode, generator=g)
            x = torch.randn(8, n, dtype=torch.float64, generator=g)
            with torch.no_grad():
                ratios.append(lin(x).square().sum(-1) / x.square().sum(-1))
        r = torch.cat(ratios)
        # relative sd of the mean <= sqrt(2/m)/sqrt(40 draws of W) (x's share is smaller)
        assert abs(float(r.mean()) / expected - 1) < 4 * math.sqrt(2 / (m * 40)) + 0.01


@pytest.mark.parametrize(("m", "n"), [(256, 64), (128, 128), (64, 256)])
def test_fan_out_norm_ratio_tall_square_wide(m, n):
    g = gen(7)
    W = torch.empty(m, n, dtype=torch.float64)
    xs = torch.randn(2000, n, dtype=torch.float64, generator=g)
    ratios = []
    for _ in range(20):
        geometric_init_(W, mode="fan_out", generator=g)
        ratios.append((xs @ W.T).square().sum(-1) / xs.square().sum(-1))
    r = torch.cat(ratios)
    assert abs(float(r.mean()) - 1) < 0.02
    # Given x, Wx ~ N(0, |x|^2 / m I_m), so r = |Wx|^2 / |x|^2 ~ chi2_m / m: variance 2 / m for
    # every shape, wide layers (m < n) included. 40,000 draws (20 W) estimate it to ~1-2%.
    assert abs(float(r.var()) - 2 / m) < 0.1 * 2 / m


def test_relu_gain_sqrt2_preserves_norm():
    g = gen(5)
    m, n = 512, 256
    W = he_(torch.empty(m, n, dtype=torch.float64), mode="fan_out", generator=g)
    x = torch.randn(512, n, dtype=torch.float64, generator=g)
    ratio = torch.relu(x @ W.T).square().sum(-1).mean() / x.square().sum(-1).mean()
    assert abs(float(ratio) - 1) < 0.05


def test_bad_arguments():
    w = torch.empty(4, 4)
    with pytest.raises(ValueError, match="mode must be one of"):
        geometric_init_(w, mode="fanout")
    with pytest.raises(ValueError, match="distribution must be one of"):
        geometric_init_(w, distribution="gauss")
    with pytest.raises(ValueError, match="gain must be"):
        geometric_init_(w, gain=-1.0)
    with pytest.raises(TypeError, match="gain must be a float"):
        geometric_init_(w, gain="2")
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_module_(nn.Linear(2, 2), scheme="kaiming")
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        init_module_(w)
    with pytest.raises(ValueError, match="at least 2 non-empty dims"):
        orthogonal_(torch.empty(3))
    with pytest.raises(TypeError, match="floating-point"):
        orthogonal_(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        orthogonal_(nn.ReLU())
    with pytest.raises(TypeError, match="unsupported module LayerNorm"):
        geometric_init_(nn.LayerNorm(4))


# ---------------------------------------------------------------- orthogonal
@settings(deadline=None, max_examples=15)
@given(rows=st.integers(1, 80), cols=st.integers(1, 80), seed=st.integers(0, 2**16))
def test_orthogonal_fp32_any_shape(rows, cols, seed):
    w = orthogonal_(torch.empty(rows, cols), generator=gen(seed))
    W = w.double()
    G = W.T @ W if rows >= cols else W @ W.T  # tall: columns, wide: rows
    assert torch.allclose(G, torch.eye(G.shape[0], dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (96, 32), (32, 96), (16, 8, 3, 3)])
def test_orthogonal_shapes_and_gain(shape):
    w = orthogonal_(torch.empty(shape), gain=2.0, generator=gen())
    s = orthogonality_stats(w / 2)  # flattens trailing dims; auto picks the smaller Gram
    assert s["fro_error"] < 1e-5 and abs(s["sv_min"] - 1) < 1e-5 and abs(s["sv_max"] - 1) < 1e-5


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_orthogonal_half_precision(dtype, tol):
    w = torch.empty(128, 64, dtype=dtype)
    assert orthogonal_(w, generator=gen()) is w and w.dtype == dtype
    s = orthogonality_stats(w)
    assert s["fro_error"] < tol and abs(s["sv_max"] - 1) < tol and abs(s["sv_min"] - 1) < tol


def test_orthogonal_is_haar_sign_corrected():
    # with the sign fix, diagonal entries of Q are symmetric about 0 (no bias towards +)
    g = gen(11)
    diag = torch.stack([orthogonal_(torch.empty(8, 8), generator=g).diagonal() for _ in range(400)])
    assert abs(float((diag > 0).float().mean()) - 0.5) < 0.05


# ---------------------------------------------------------------- init_module_
def test_init_module_visits_linear_and_conv():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, groups=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 3),
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, 10),
        nn.LayerNorm(10),
    )
    init_module_(model, "su", generator=gen())
    for layer in (model[0], model[2], model[4]):
        assert float(layer.bias.detach().abs().max()) == 0
    assert torch.equal(model[5].weight, torch.ones(10))  # LayerNorm untouched
    lin = nn.Linear(64, 256)
    init_module_(lin, "xavier", generator=gen(2))
    assert abs(float(lin.weight.detach().var()) * 160 - 1) < 0.05
    init_module_(lin, "orthogonal", gain=3.0, generator=gen(2))
    assert orthogonality_stats(lin.weight / 3)["fro_error"] < 1e-4
    init_module_(lin, lambda w: w.fill_(0.5))
    assert float(lin.weight.detach().min()) == 0.5


def test_init_module_torch_default_is_reproducible_and_keeps_bias():
    a, b = nn.Linear(30, 20), nn.Linear(30, 20)
    init_module_(a, "torch", zero_bias=False, generator=gen(4))
    init_module_(b, "torch", zero_bias=False, generator=gen(4))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert float(a.bias.detach().abs().max()) > 0
    assert float(a.weight.detach().abs().max()) <= 1 / math.sqrt(30)  # kaiming_uniform(a=sqrt(5))
