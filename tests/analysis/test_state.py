"""Every probe leaves the model bit-identical: parameters, buffers (BN running statistics),
gradients, RNG state and modes; probing between training steps does not change training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kexue.analysis import (
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
    preserved_model_state,
    step_probe,
)

from ._models import ce_loss, cnn, image_batch


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "tracks": [getattr(m, "track_running_stats", None) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(model: nn.Module, snap: dict) -> None:
    now = model.state_dict()
    assert now.keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    for p, (g, gv) in zip(model.parameters(), snap["grads"], strict=True):
        assert p.grad is g  # the same tensor object (or None)
        if g is not None:
            assert torch.equal(p.grad, gv)
    assert [m.training for m in model.modules()] == snap["modes"]
    assert [getattr(m, "track_running_stats", None) for m in model.modules()] == snap["tracks"]
    assert torch.equal(torch.get_rng_state(), snap["rng"])


PROBES = {
    "step_probe": lambda m, b: step_probe(m, ce_loss, b, [0.05, 0.2, 1.0]),
    "eigen_autograd": lambda m, b: hessian_top_eigenvalue(m, ce_loss, b, iters=5),
    "eigen_func": lambda m, b: hessian_top_eigenvalue(m, ce_loss, b, iters=5, method="func"),
    "trace": lambda m, b: hessian_trace(m, ce_loss, b, samples=3),
    "trace_func": lambda m, b: hessian_trace(m, ce_loss, b, samples=3, method="func"),
    "hvp": lambda m, b: hessian_vector_product(
        m, ce_loss, b, [torch.ones_like(p) for p in m.parameters()]
    ),
}


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("probe", sorted(PROBES))
@pytest.mark.parametrize("with_grads", [False, True], ids=["nograd", "grad"])
def test_probe_leaves_model_bit_identical(bn, probe, with_grads):
    torch.manual_seed(0)
    model = cnn(bn=bn, dropout=0.25).train()
    batch = image_batch()
    # one real training forward so running statistics are not at their initial values
    loss, _ = ce_loss(model, batch)
    if with_grads:
        loss.backward()
    snap = _snapshot(model)
    PROBES[probe](model, batch)
    _assert_same(model, snap)


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
def test_probing_between_steps_does_not_change_training(bn):
    torch.manual_seed(0)
    a = cnn(bn=bn, dropout=0.25).train()
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    for step in range(2):
        batch = image_batch(seed=step)
        state = torch.get_rng_state()
        for fn in PROBES.values():
            fn(a, batch)  # probe a only; both then take the same step with the same dropout
        for model, opt in ((a, opt_a), (b, opt_b)):
            torch.set_rng_state(state)
            opt.zero_grad()
            ce_loss(model, batch)[0].backward()
            opt.step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_eval_mode_probe_uses_running_statistics_and_train_mode_batch_statistics():
    torch.manual_seed(0)
    model = cnn(bn=True)
    batch = image_batch()
    with torch.no_grad():
        for s in range(3):  # move the running statistics away from (0, 1)
            model(image_batch(seed=10 + s)[0] * 3 + 1)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.eval()
        eval_loss = float(ce_loss(ref, batch)[0])  # running statistics
        ref.train()
        train_loss = float(ce_loss(ref, batch)[0])  # batch statistics (updates ref's stats)
    assert abs(train_loss - eval_loss) > 1e-3
    model.train()
    assert step_probe(model, ce_loss, batch, [0.1]).loss == pytest.approx(train_loss, rel=1e-6)
    model.eval()
    assert step_probe(model, ce_loss, batch, [0.1]).loss == pytest.approx(eval_loss, rel=1e-6)


def test_preserved_model_state_restores_on_error():
    torch.manual_seed(0)
    model = cnn(bn=True).train()
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), preserved_model_state(model):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model(image_batch()[0])  # updates running statistics
        model.eval()
        torch.rand(3)
        raise RuntimeError("boom")
    _assert_same(model, snap)


def test_dropout_model_is_one_function_during_a_probe():
    torch.manual_seed(0)
    model = cnn(bn=False, dropout=0.5).train()
    batch = image_batch()
    a = step_probe(model, ce_loss, batch, [0.1, 0.3])
    b = step_probe(model, ce_loss, batch, [0.1, 0.3])
    assert torch.equal(a.losses, b.losses) and a.beta == b.beta
