"""A lighter training loop (issue 15) that still trains what it is given (issue 9 §1)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from kexue.core.seed import seed_everything
from kexue.train import TrainConfig, Trainer
from kexue.train.data import epoch_batches

from ._tiny import loss_fn, make_data, make_model


def _trainer(model, opt, out=None, **cfg):
    return Trainer(
        model, opt, train_data=make_data(), loss_fn=loss_fn, out_dir=out, progress=False,
        config=TrainConfig(batch_size=8, **cfg),
    )  # fmt: skip


def test_optimizer_over_another_models_parameters_raises():
    model, other = make_model(seed=0), make_model(seed=1)
    with pytest.raises(ValueError, match=r"4 of 4 parameter\(s\) that are not the model's"):
        _trainer(model, torch.optim.Adam(other.parameters(), 1e-2), max_steps=3)
    extra = nn.Parameter(torch.zeros(3))  # e.g. a temperature living outside the model
    with pytest.raises(ValueError, match=r"1 of 5 .*\(3,\)"):
        _trainer(model, torch.optim.Adam([*model.parameters(), extra], 1e-2), max_steps=3)
    sub = torch.optim.Adam(model[0].parameters(), 1e-2)  # a subset (fine-tuning) is allowed
    assert _trainer(model, sub, max_steps=2).fit()["steps"] == 2


@pytest.mark.parametrize("clip", [None, 1.0])
def test_grad_norm_is_computed_only_when_logged_or_clipping(tmp_path, monkeypatch, clip):
    calls = {"norm": 0}
    for name in ("get_total_norm", "clip_grad_norm_"):
        real = getattr(torch.nn.utils, name)

        def counted(*a, _real=real, **k):
            calls["norm"] += 1
            return _real(*a, **k)

        monkeypatch.setattr(torch.nn.utils, name, counted)
    model = make_model()
    t = _trainer(model, torch.optim.Adam(model.parameters(), 1e-2), tmp_path, max_steps=10,
                 log_every=4, grad_clip=clip)  # fmt: skip
    t.fit()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [4, 8, 10]
    assert all(r["grad_norm"] > 0 for r in recs)
    assert calls["norm"] == (10 if clip else 3)  # every step only when clipping needs it


def test_logged_grad_norm_is_the_norm_at_the_log_step(tmp_path):
    model = make_model()
    t = _trainer(model, torch.optim.SGD(model.parameters(), 0.0), tmp_path, max_steps=3,
                 log_every=3, shuffle=False)  # fmt: skip
    t.fit()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    # lr 0: the weights never move; recompute step 3's gradient by hand (batch 3, dropout off
    # would change it, so replay the RNG the Trainer used)
    ref = make_model()
    seed_everything(0)
    data = make_data()
    batches = epoch_batches(data, epoch=0, batch_size=8, seed=0, shuffle=False)
    for idx in batches[:3]:
        ref.zero_grad()
        x, y = data[idx]
        nn.functional.cross_entropy(ref(x), y).backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in ref.parameters()])
    assert rec["grad_norm"] == pytest.approx(float(norm), rel=1e-6)


def test_trainer_lands_on_the_same_weights_as_a_bare_loop():
    """What benchmarks/train.py times: the same batches, the same seed, bit-identical weights."""
    data = make_data()
    model = make_model(seed=0)
    _trainer(model, torch.optim.Adam(model.parameters(), 1e-2), max_steps=14, seed=0).fit()

    bare = make_model(seed=0)
    opt = torch.optim.Adam(bare.parameters(), 1e-2)
    seed_everything(0)
    for epoch in range(2):  # 53 examples / 8 = 7 batches per epoch
        # a private generator, so that starting the loader does not consume the global RNG
        # that the dropout masks come from (the Trainer's loader does the same)
        order = epoch_batches(data, epoch=epoch, batch_size=8, seed=0)
        for batch in DataLoader(data, batch_sampler=order, generator=torch.Generator()):
            opt.zero_grad()
            loss_fn(bare, batch)[0].backward()
            opt.step()
    for a, b in zip(model.state_dict().values(), bare.state_dict().values(), strict=True):
        assert torch.equal(a, b)
