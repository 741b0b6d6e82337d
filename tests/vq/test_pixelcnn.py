"""Gated PixelCNN prior: exact causality, no blind spot, normalisation, sampling law."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kexue.vq import PixelCNNPrior


def _input_gradients(prior: PixelCNNPrior, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``g[i, j, a, b]`` = |d logits(i, j) / d input(a, b)|, summed over channels (float64)."""
    torch.manual_seed(seed)
    prior = prior.double()
    c = prior.embed.embedding_dim
    x = torch.randn(1, c, h, w, dtype=torch.float64, requires_grad=True)
    out = prior.logits_from_embedding(x)
    g = torch.zeros(h, w, h, w, dtype=torch.float64)
    for i, j in itertools.product(range(h), range(w)):
        probe = torch.randn(out.shape[1], dtype=torch.float64)
        (gx,) = torch.autograd.grad((out[0, :, i, j] * probe).sum(), x, retain_graph=True)
        g[i, j] = gx[0].abs().sum(0)
    return g


@pytest.mark.parametrize("kernel", [3, 5])
def test_causality_and_no_blind_spot(kernel):
    h = w = 5
    layers = math.ceil((h - 1) / (kernel // 2)) + 1  # enough for the cone to reach every corner
    prior = PixelCNNPrior(7, channels=8, num_layers=layers, kernel_size=kernel)
    g = _input_gradients(prior, h, w)
    for i, j in itertools.product(range(h), range(w)):
        t = i * w + j
        flat = g[i, j].reshape(-1)
        assert torch.count_nonzero(flat[t:]) == 0, (i, j)  # exactly zero at positions >= t
        assert (flat[:t] > 0).all(), (i, j, flat[:t])  # every earlier position is seen


def test_too_few_layers_leave_positions_unseen():
    """The receptive field grows by k // 2 per layer (the test above is not vacuous)."""
    g = _input_gradients(PixelCNNPrior(7, channels=8, num_layers=1, kernel_size=3), 5, 5)
    assert torch.count_nonzero(g[4, 4].reshape(-1)[:24]) < 24


def test_changing_a_code_never_changes_earlier_predictions():
    torch.manual_seed(1)
    prior = PixelCNNPrior(6, channels=16, num_layers=4, num_classes=3)
    codes = torch.randint(6, (2, 4, 4))
    y = torch.tensor([0, 2])
    base = prior(codes, y)
    for t in range(16):
        i, j = divmod(t, 4)
        changed = codes.clone()
        changed[:, i, j] = (changed[:, i, j] + 1) % 6
        out = prior(changed, y)
        same = base.flatten(2)[:, :, : t + 1]
        assert torch.equal(out.flatten(2)[:, :, : t + 1], same)


def test_log_prob_is_normalised_over_every_map():
    torch.manual_seed(2)
    prior = PixelCNNPrior(3, channels=8, num_layers=3).double()
    maps = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 2, 2)  # 81 maps
    total = prior.log_prob(maps).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_log_prob_equals_incremental_prefix_scores():
    torch.manual_seed(3)
    prior = PixelCNNPrior(5, channels=8, num_layers=3, num_classes=2)
    codes = torch.randint(5, (3, 3, 4))
    y = torch.tensor([1, 0, 1])
    total = torch.zeros(3)
    for t in range(12):  # future positions blanked: the prefix alone decides step t
        i, j = divmod(t, 4)
        prefix = codes.clone().view(3, -1)
        prefix[:, t:] = 0
        logp = torch.log_softmax(prior(prefix.view(3, 3, 4), y)[:, :, i, j], -1)
        total += logp.gather(1, codes[:, i, j, None])[:, 0]
    torch.testing.assert_close(prior.log_prob(codes, y), total, rtol=1e-5, atol=1e-5)


def test_samples_follow_the_model_distribution():
    torch.manual_seed(4)
    prior = PixelCNNPrior(3, channels=8, num_layers=2)
    for p in prior.head[-1].parameters():
        p.data.mul_(8)  # a peaked, non-uniform law
    maps = torch.tensor(list(itertools.product(range(3), repeat=2))).view(-1, 1, 2)
    probs = prior.log_prob(maps).exp().detach()
    n = 6000
    s = prior.sample(n, (1, 2), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(s.view(n, 2)[:, 0] * 3 + s.view(n, 2)[:, 1], minlength=9).float() / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-3).all(), (freq, probs)


def test_sample_is_batched_reproducible_and_temperature_sharpens():
    torch.manual_seed(5)
    prior = PixelCNNPrior(4, channels=8, num_layers=2, num_classes=2)
    a = prior.sample(5, (3, 3), y=1, generator=torch.Generator().manual_seed(7))
    b = prior.sample(
        5, (3, 3), y=torch.ones(5, dtype=torch.long), generator=torch.Generator().manual_seed(7)
    )
    assert a.shape == (5, 3, 3) and a.dtype == torch.long and torch.equal(a, b)
    cold = prior.sample(8, (3, 3), y=0, temperature=1e-4)
    assert (cold == cold[0]).all()  # T -> 0: the greedy map, the same for every draw
    assert prior.training  # sample() restores the mode


def test_conditioning_changes_the_logits():
    torch.manual_seed(6)
    prior = PixelCNNPrior(4, channels=8, num_layers=2, num_classes=3)
    with torch.no_grad():
        for layer in prior.layers:
            layer.cond.weight.normal_()
    codes = torch.randint(4, (1, 3, 3)).expand(3, 3, 3)
    out = prior(codes, torch.arange(3))
    assert not torch.allclose(out[0], out[1])


def test_bad_inputs():
    prior = PixelCNNPrior(4, channels=8, num_layers=2, num_classes=2)
    codes = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="y"):
        prior.log_prob(codes)
    with pytest.raises(ValueError, match="codes"):
        prior.log_prob(codes + 4, torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="codes"):
        prior.log_prob(codes.float(), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="codes"):
        prior.log_prob(codes[0], torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="y"):
        prior.log_prob(codes, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(2, (3, 3), y=0, temperature=0)
    with pytest.raises(ValueError, match="y"):
        PixelCNNPrior(4, channels=8, num_layers=1).log_prob(codes, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel_size"):
        PixelCNNPrior(4, kernel_size=4)


@pytest.mark.parametrize("conditional", [False, True])
def test_fast_sampler_draws_what_the_reference_draws(conditional):
    torch.manual_seed(7)
    prior = PixelCNNPrior(6, channels=8, num_layers=3, num_classes=4 if conditional else 0)
    for p in prior.head[-1].parameters():
        p.data.mul_(4)
    y = torch.tensor([0, 3, 1, 2, 2]) if conditional else None
    fast = prior.sample(5, (4, 3), y=y, generator=torch.Generator().manual_seed(1))
    ref = prior.sample_reference(5, (4, 3), y=y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fast, ref)
    assert len(set(fast.flatten().tolist())) > 1
