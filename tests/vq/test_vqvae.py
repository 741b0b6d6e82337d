"""VQVAE: shapes, straight-through training signal, eval-mode codes, a tiny overfit."""

from __future__ import annotations

import pytest
import torch

from kexue.vq import VQVAE


@pytest.mark.parametrize(("side", "down", "code_side"), [(28, 2, 7), (64, 2, 16), (32, 3, 4)])
def test_shapes(side, down, code_side):
    model = VQVAE(in_channels=3, hidden=8, code_dim=4, num_codes=16, downsample=down).eval()
    x = torch.rand(2, 3, side, side) * 2 - 1
    codes = model.encode(x)
    assert codes.shape == (2, code_side, code_side)
    out = model.decode(codes)
    assert out.shape == x.shape and out.abs().max() <= 1
    assert torch.equal(model.reconstruct(x), out)
    x_hat, codes2, losses = model(x)
    assert torch.equal(codes2, codes) and torch.allclose(x_hat, out)
    assert set(losses) >= {"reconstruction", "codebook", "commitment", "total"}


def test_reconstruction_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = VQVAE(hidden=8, code_dim=4, num_codes=8)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    _, _, losses = model(x)
    losses["reconstruction"].backward()
    enc = model.encoder[0].weight.grad
    assert enc is not None and enc.abs().sum() > 0  # through the straight-through estimator
    assert model.quantizer.weight.grad is None  # the decoder's gradient skips the codebook


def test_tiny_model_overfits_sixteen_images():
    torch.manual_seed(1)
    blocks = (torch.rand(16, 1, 4, 4) > 0.5).float() * 2 - 1  # random 4x4 block patterns
    x = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)  # (16, 1, 16, 16)
    model = VQVAE(hidden=16, code_dim=8, num_codes=32, num_res_blocks=1,
                  quantizer_kwargs={"dead_code_threshold": 0.5})  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    base = (x - x.mean(0)).square().mean()
    for _ in range(40):
        _, _, losses = model(x)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    model.eval()
    mse = (model.reconstruct(x) - x).square().mean()
    assert mse < 0.1 * base, (mse, base)
    assert model.quantizer.stats["usage"] > 0


def test_bad_inputs():
    model = VQVAE(hidden=8, code_dim=4, num_codes=8)
    with pytest.raises(ValueError, match="x"):
        model.encode(torch.rand(1, 1, 27, 28))
    with pytest.raises(ValueError, match="x"):
        model.encode(torch.rand(1, 3, 28, 28))
    with pytest.raises(TypeError, match="x"):
        model.encode(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="codes"):
        model.decode(torch.full((1, 7, 7), 8))
    with pytest.raises(ValueError, match="code_dim"):
        from kexue.vq import VectorQuantizer

        VQVAE(code_dim=4, quantizer=VectorQuantizer(8, 5))
