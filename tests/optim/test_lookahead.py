"""Lookahead: equivalences, hand trajectory, peer trajectory, save/resume, schedulers, AMP."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

from kexue.optim import Lazy, Lookahead


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 5, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=g),
        )
        for _ in range(n)
    ]


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches, scheduler=None) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], exact: bool = True) -> None:
    for x, y in zip(a, b, strict=True):
        if exact:
            assert torch.equal(x, y), (x - y).abs().max()
        else:
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("inner", ["adam", "sgd"])
@pytest.mark.parametrize("k", [1, 3])
def test_alpha_one_is_inner(inner: str, k: int) -> None:
    def make(m):
        if inner == "adam":
            return torch.optim.Adam(m.parameters(), lr=1e-2)
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    batches = _batches(7)
    m1, m2 = _model(), _model()
    _train(m1, make(m1), batches)
    _train(m2, Lookahead(make(m2), k=k, alpha=1.0), batches)
    _assert_same(_params(m1), _params(m2))


def test_k1_sgd_is_sgd_with_scaled_lr() -> None:
    batches = _batches(5)
    m1, m2 = _model(), _model()
    _train(m1, torch.optim.SGD(m1.parameters(), lr=0.05), batches)
    _train(m2, Lookahead(torch.optim.SGD(m2.parameters(), lr=0.1), k=1, alpha=0.5), batches)
    _assert_same(_params(m1), _params(m2), exact=False)


def test_hand_trajectory_quadratic() -> None:
    # L = 0.5 * w^2, SGD lr 0.5: each fast step halves w. k=2, alpha=0.5, w0 = 8.
    w = nn.Parameter(torch.tensor([8.0], dtype=torch.float64))
    opt = Lookahead(torch.optim.SGD([w], lr=0.5), k=2, alpha=0.5)
    seen = []
    for _ in range(4):
        opt.zero_grad()
        (0.5 * w**2).sum().backward()
        opt.step()
        seen.append((w.item(), opt.state[w]["slow_param"].item()))
    # step1: fast 4, slow 8; step2: fast 2 -> slow 8 + .5(2-8) = 5, fast 5;
    # step3: fast 2.5; step4: fast 1.25 -> slow 5 + .5(1.25-5) = 3.125
    assert seen == [(4.0, 8.0), (5.0, 5.0), (2.5, 5.0), (3.125, 3.125)]
    assert opt.step_count == 4


@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
def test_matches_pytorch_optimizer(pullback: str) -> None:
    peer = pytest.importorskip("pytorch_optimizer")
    batches = _batches(11)
    m1, m2 = _model(), _model()
    ours = Lookahead(
        torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9), k=3, alpha=0.6, pullback=pullback
    )
    theirs = peer.Lookahead(
        torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9),
        k=3,
        alpha=0.6,
        pullback_momentum=pullback,
    )
    _train(m1, ours, batches)
    _train(m2, theirs, batches)
    _assert_same(_params(m1), _params(m2), exact=False)


def test_matches_pytorch_optimizer_adam() -> None:
    peer = pytest.importorskip("pytorch_optimizer")
    batches = _batches(12)
    m1, m2 = _model(), _model()
    _train(m1, Lookahead(torch.optim.Adam(m1.parameters(), lr=1e-2), k=5, alpha=0.5), batches)
    _train(m2, peer.Lookahead(torch.optim.Adam(m2.parameters(), lr=1e-2), k=5, alpha=0.5), batches)
    _assert_same(_params(m1), _params(m2), exact=False)


@pytest.mark.parametrize("pullback", ["none", "pullback"])
def test_state_dict_resume_mid_cycle_is_exact(pullback: str) -> None:
    batches = _batches(12)

    def make(m):
        return Lookahead(
            torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), k=5, alpha=0.5, pullback=pullback
        )

    ref = _model()
    _train(ref, make(ref), batches)

    m = _model()
    opt = make(m)
    _train(m, opt, batches[:7])  # mid-cycle: 7 % 5 = 2
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    fresh = _model(seed=123)  # different init: everything must come from the checkpoint
    fresh.load_state_dict(ckpt["model"])
    opt2 = make(fresh)
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.step_count == 7
    _train(fresh, opt2, batches[7:])
    _assert_same(_params(ref), _params(fresh))


def test_state_dict_layout_and_errors() -> None:
    m = _model()
    opt = Lookahead(torch.optim.Adam(m.parameters()), k=4, alpha=0.8)
    sd = opt.state_dict()
    assert {"state", "param_groups", "lookahead"} <= set(sd)
    assert sd["lookahead"]["k"] == 4 and sd["lookahead"]["alpha"] == 0.8
    assert len(sd["lookahead"]["slow_param"]) == len(list(m.parameters()))
    with pytest.raises(ValueError, match="lookahead"):
        opt.load_state_dict(torch.optim.Adam(m.parameters()).state_dict())
    pickle.loads(pickle.dumps(opt))  # picklable like any optimizer


def test_slow_weights_context() -> None:
    m = _model()
    opt = Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), k=5, alpha=0.5)
    init = _params(m)
    _train(m, opt, _batches(3))
    fast = _params(m)
    with opt.slow_weights():
        _assert_same(_params(m), init)  # no sync yet: slow = initial weights
        with pytest.raises(RuntimeError):
            opt.state_dict()
        with pytest.raises(RuntimeError):
            opt.step()
    _assert_same(_params(m), fast)


def test_scheduler_changes_inner_lr() -> None:
    m = _model()
    inner = torch.optim.SGD(m.parameters(), lr=1.0)
    opt = Lookahead(inner, k=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    _train(m, opt, _batches(4), scheduler=sched)
    assert inner.param_groups[0]["lr"] == pytest.approx(0.01)
    assert opt.param_groups is inner.param_groups


def test_add_param_group_gets_slow_copy() -> None:
    m = _model()
    opt = Lookahead(torch.optim.SGD(list(m[0].parameters()), lr=0.1), k=2)
    opt.add_param_group({"params": list(m[2].parameters())})
    assert all("slow_param" in opt.state[p] for p in m.parameters())
    assert len(opt.optimizer.param_groups) == 2
    _train(m, opt, _batches(2))


def test_validation() -> None:
    m = _model()
    with pytest.raises(TypeError, match="optimizer"):
        Lookahead(m)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), alpha=0.0)
    with pytest.raises(ValueError, match="k"):
        Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), k=0)
    with pytest.raises(ValueError, match="pullback"):
        Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), pullback="bogus")
    with pytest.raises(ValueError, match="momentum"):
        Lookahead(torch.optim.Adam(m.parameters()), pullback="reset")


def test_grad_scaler_skipped_step_does_not_count() -> None:
    m = _model().float()
    opt = Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), k=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    scaler.scale(nn.functional.cross_entropy(m(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    assert opt.step_count == 1
    before = _params(m)
    opt.zero_grad()
    loss = nn.functional.cross_entropy(m(x), y) * float("inf")
    scaler.scale(loss).backward()
    scaler.step(opt)  # inf gradients: skipped, counter unchanged, weights unchanged
    scaler.update()
    assert opt.step_count == 1
    _assert_same(_params(m), before)


def test_composes_with_lazy() -> None:
    torch.manual_seed(0)
    emb, head = nn.Embedding(20, 4).double(), nn.Linear(4, 2).double()
    params = list(emb.parameters()) + list(head.parameters())
    opt = Lookahead(Lazy(torch.optim.Adam(params, lr=0.1), params=[emb]), k=2, alpha=0.5)
    x = torch.tensor([[1, 3, 3]])
    w0 = emb.weight.detach().clone()
    for _ in range(4):
        opt.zero_grad()
        head(emb(x)).sum().backward()
        opt.step()
    untouched = [i for i in range(20) if i not in (1, 3)]
    assert torch.equal(emb.weight[untouched], w0[untouched])
    assert not torch.equal(emb.weight[[1, 3]], w0[[1, 3]])
    sd = opt.state_dict()
    assert {"lazy", "lookahead"} <= set(sd)
    opt.load_state_dict(sd)


def test_trainer_checkpoint_resume_with_lookahead_lazy(tmp_path) -> None:
    """Through kexue.train's safetensors checkpoints: resume at step 5 (mid-cycle for k=3)
    gives bit-identical weights at step 10."""
    from kexue.train import TrainConfig, Trainer

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.EmbeddingBag(100, 8, mode="mean")
            self.l = nn.Linear(8, 2)

        def forward(self, x):
            return self.l(self.e(x))

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 100, (5,), generator=g), i % 2) for i in range(64)]

    def collate(b):
        return torch.stack([x for x, _ in b]), torch.tensor([y for _, y in b])

    def loss_fn(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    def fit(resume):
        torch.manual_seed(0)
        m = Bag()
        opt = Lookahead(Lazy(torch.optim.Adam(m.parameters(), 1e-2), params=[m.e]), k=3)
        cfg = TrainConfig(max_steps=10, batch_size=8, ckpt_every=5, log_every=5, keep_last=None)
        Trainer(
            m, opt, train_data=data, collate_fn=collate, loss_fn=loss_fn, config=cfg,
            out_dir=tmp_path, progress=False,
        ).fit(resume=resume)  # fmt: skip
        return m, opt

    ref, _ = fit(False)
    resumed, opt = fit(tmp_path / "checkpoints" / "step_00000005")
    assert opt.step_count == 10
    for a, b in zip(ref.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
def test_sync_is_multi_tensor_and_bit_exact_with_the_per_parameter_rule(monkeypatch, pullback):
    """Issue 15: the k-step sync runs as multi-tensor kernels (no per-parameter ``lerp_``/
    ``copy_``/``zero_``), nothing happens on the other k - 1 steps, and the trajectory is
    bit-identical to the per-parameter rule written out here."""
    batches = _batches(9)
    k, alpha = 3, 0.6

    # per-parameter reference: phi <- phi + alpha (theta - phi); theta <- phi; momentum rules
    ref = _model()
    inner = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    slow = [p.detach().clone() for p in ref.parameters()]
    slow_m = [torch.zeros_like(p) for p in ref.parameters()]
    for t, (x, y) in enumerate(batches, 1):
        inner.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        inner.step()
        if t % k:
            continue
        with torch.no_grad():
            for i, p in enumerate(ref.parameters()):
                slow[i].lerp_(p, alpha)
                p.copy_(slow[i])
                buf = inner.state[p]["momentum_buffer"]
                if pullback == "reset":
                    buf.zero_()
                elif pullback == "pullback":
                    slow_m[i].lerp_(buf, alpha)
                    buf.copy_(slow_m[i])

    m = _model()
    opt = Lookahead(
        torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), k=k, alpha=alpha, pullback=pullback
    )
    calls = {"foreach": 0}
    for name in ("_foreach_lerp_", "_foreach_copy_", "_foreach_zero_"):
        real = getattr(torch, name)

        def counted(*a, _real=real, **kw):
            calls["foreach"] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(torch, name, counted)
    real_sync = opt.synchronize

    def sync_without_per_parameter_ops():
        def boom(*a, **kw):
            raise AssertionError("per-parameter tensor op inside synchronize()")

        with monkeypatch.context() as mp:
            for op in ("lerp_", "copy_", "zero_"):
                mp.setattr(torch.Tensor, op, boom)
            real_sync()

    opt.synchronize = sync_without_per_parameter_ops
    for t, (x, y) in enumerate(batches, 1):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        before = calls["foreach"]
        opt.step()
        expected = 0 if t % k else {"none": 2, "reset": 3, "pullback": 4}[pullback]
        assert calls["foreach"] - before == expected, t
    _assert_same(_params(ref), _params(m))


def test_step_hooks_and_profiler_still_see_the_wrapper() -> None:
    """``step`` skips Optimizer's per-call profiler/hook wrapper only when nothing listens."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    m = _model()
    opt = Lookahead(torch.optim.Adam(m.parameters(), lr=1e-2), k=2)
    seen = []
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o)))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o)))
    x, y = _batches(1)[0]
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    assert seen == [("pre", opt), ("post", opt)] and opt.step_count == 1
    handle.remove()
    glob = register_optimizer_step_pre_hook(lambda o, args, kwargs: seen.append(("global", o)))
    try:
        opt.step()
    finally:
        glob.remove()
    assert ("global", opt) in seen and opt.step_count == 2
    with torch.profiler.profile() as prof:
        opt.step()
    assert any(e.name == "Optimizer.step#Lookahead.step" for e in prof.events())
    seen.clear()
    opt.step()  # no hooks of its own left but the post hook
    assert seen == [("post", opt)] and opt.step_count == 4
