"""Trainer behaviour: metrics.jsonl, eval schedule, grad clipping, bf16, config validation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from kexue.core.io import load_safetensors
from kexue.train import (
    TrainConfig,
    Trainer,
    barrier,
    distributed,
    is_main_process,
    load_model,
    save_model,
    unwrap,
    world_size,
)

from ._tiny import loss_fn, make_data, make_model, make_opt_sched


def _fit(out, cfg, **kw):
    model = kw.pop("model", None) or make_model()
    opt, sched = make_opt_sched(model)
    kw.setdefault("scheduler", sched)
    t = Trainer(
        model,
        kw.pop("optimizer", opt),
        train_data=make_data(),
        loss_fn=kw.pop("loss_fn", loss_fn),
        config=cfg,
        out_dir=out,
        progress=False,
        **kw,
    )
    return t, t.fit()


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_metrics_jsonl_content(tmp_path):
    cfg = TrainConfig(max_steps=9, batch_size=8, log_every=4, eval_every=5)
    _, hist = _fit(tmp_path, cfg, eval_fn=lambda m: {"dev_f1": 0.5})
    recs = _records(tmp_path)
    assert [(r["event"], r["step"]) for r in recs] == [
        ("train", 4),
        ("eval", 5),
        ("train", 8),
        ("train", 9),
        ("eval", 9),
    ]
    for r in recs:
        assert {"event", "step", "epoch", "time", "lr"} <= r.keys()
        assert r["epoch"] == pytest.approx(r["step"] / 7)  # 53 examples / 8 -> 7 batches/epoch
    train = [r for r in recs if r["event"] == "train"]
    for r in train:
        assert {"loss", "acc", "grad_norm", "tokens_per_s", "steps_per_s"} <= r.keys()
        assert math.isfinite(r["loss"]) and 0 <= r["acc"] <= 1 and r["tokens_per_s"] > 0
    assert [r["lr"] for r in train] == sorted(
        (r["lr"] for r in train), reverse=True
    )  # LambdaLR decays
    assert train[0]["lr"] == pytest.approx(1e-2 * (1 - 4 / 40))
    times = [r["time"] for r in recs]
    assert times == sorted(times)
    assert [r["dev_f1"] for r in recs if r["event"] == "eval"] == [0.5, 0.5]
    # history mirrors the last records
    assert hist["steps"] == 9 and hist["train"]["loss"] == train[-1]["loss"]
    assert hist["eval"] == {"dev_f1": 0.5} and len(hist["evals"]) == 2
    assert hist["tokens_per_s"] > 0 and hist["wall_time"] > 0
    assert json.loads((tmp_path / "history.json").read_text())["steps"] == 9
    assert json.loads((tmp_path / "train_config.json").read_text())["max_steps"] == 9


@pytest.mark.parametrize(("max_steps", "expected"), [(10, [3, 6, 9, 10]), (9, [3, 6, 9])])
def test_eval_fn_called_at_expected_steps(tmp_path, max_steps, expected):
    calls = []
    trainer_ref = {}

    def eval_fn(model):
        assert not model.training and not torch.is_grad_enabled()
        assert not isinstance(model, nn.parallel.DistributedDataParallel)
        calls.append(trainer_ref["t"].step)
        return {"n": len(calls)}

    model = make_model()
    opt, _ = make_opt_sched(model)
    t = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        config=TrainConfig(max_steps=max_steps, batch_size=8, eval_every=3),
        progress=False,
    )
    trainer_ref["t"] = t
    t.fit()
    assert calls == expected
    assert model.training  # train mode restored


def test_eval_only_at_end_when_eval_every_is_none():
    calls = []
    model = make_model()
    opt, _ = make_opt_sched(model)
    Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=loss_fn,
        eval_fn=lambda m: calls.append(1) or {},
        config=TrainConfig(max_steps=5, batch_size=8),
        progress=False,
    ).fit()
    assert calls == [1]


def test_grad_clip_bounds_the_update_norm():
    # SGD(lr=1): the update equals the (clipped) gradient, so its norm is what we bound
    def big_loss(model, batch):
        loss, m = loss_fn(model, batch)
        return 1e4 * loss, m

    deltas = {}
    for clip in (0.5, None):
        model = make_model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        t = Trainer(
            model,
            opt,
            train_data=make_data(),
            loss_fn=big_loss,
            config=TrainConfig(max_steps=1, batch_size=8, grad_clip=clip, log_every=1),
            progress=False,
        )
        hist = t.fit()
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        deltas[clip] = (after - before).norm().item()
        assert hist["train"]["grad_norm"] > 10  # logged norm is the pre-clip norm
    assert deltas[0.5] == pytest.approx(0.5, rel=1e-4)
    assert deltas[None] > 10


def test_bf16_autocast_path_runs():
    seen = []

    def bf16_loss(model, batch):
        x, y = batch
        logits = model(x)
        seen.append(logits.dtype)
        return nn.functional.cross_entropy(logits.float(), y), {}

    model = make_model()
    opt, _ = make_opt_sched(model)
    hist = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=bf16_loss,
        config=TrainConfig(max_steps=4, batch_size=8, bf16=True),
        progress=False,
    ).fit()
    assert set(seen) == {torch.bfloat16}
    assert math.isfinite(hist["train"]["loss"])
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_epochs_mode_drop_last_and_callables(tmp_path):
    model = make_model()
    t = Trainer(
        model,
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        train_data=make_data(),
        loss_fn=loss_fn,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        config=TrainConfig(epochs=2, batch_size=8, drop_last=True),
        progress=False,
    )
    hist = t.fit()
    assert t.steps_per_epoch == 6 and hist["steps"] == 12 and hist["epochs"] == 2
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**12)
    # both limits: whichever comes first
    t2 = Trainer(
        make_model(),
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        train_data=make_data(),
        loss_fn=loss_fn,
        config=TrainConfig(epochs=3, max_steps=5, batch_size=8),
        progress=False,
    )
    assert t2.max_steps == 5


def test_same_seed_same_result_and_seed_matters():
    def run(seed):
        model = make_model()
        opt, _ = make_opt_sched(model)
        Trainer(
            model,
            opt,
            train_data=make_data(),
            loss_fn=loss_fn,
            config=TrainConfig(max_steps=6, batch_size=8, seed=seed),
            progress=False,
        ).fit()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nonfinite_loss_raises():
    def nan_loss(model, batch):
        return model(batch[0]).sum() * float("nan")

    model = make_model()
    opt, _ = make_opt_sched(model)
    t = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=nan_loss,
        config=TrainConfig(max_steps=3, batch_size=8),
        progress=False,
    )
    with pytest.raises(FloatingPointError, match="step 1"):
        t.fit()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # neither max_steps nor epochs
        {"max_steps": 0},
        {"max_steps": -1},
        {"max_steps": 2.5},
        {"epochs": 0},
        {"max_steps": 5, "batch_size": 0},
        {"max_steps": 5, "log_every": 0},
        {"max_steps": 5, "eval_every": -1},
        {"max_steps": 5, "grad_clip": -1.0},
        {"max_steps": 5, "grad_clip": float("nan")},
        {"max_steps": 5, "num_workers": -1},
        {"max_steps": 5, "bf16": "yes"},
        {"max_steps": 5, "seed": 1.5},
        {"max_steps": True},
    ],
)
def test_bad_config_raises_value_error(kwargs):
    with pytest.raises(ValueError, match="TrainConfig"):
        TrainConfig(**kwargs)


def test_config_is_frozen_and_bad_trainer_args():
    cfg = TrainConfig(max_steps=3, batch_size=100, drop_last=True)
    with pytest.raises(AttributeError):
        cfg.max_steps = 4  # type: ignore[misc]
    model = make_model()
    opt, _ = make_opt_sched(model)
    with pytest.raises(ValueError, match="no batch"):
        Trainer(model, opt, train_data=make_data(), loss_fn=loss_fn, config=cfg)
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(model, opt, train_data=make_data(), loss_fn=loss_fn, config={"max_steps": 3})
    with pytest.raises(TypeError, match="optimizer"):
        Trainer(
            model,
            object(),
            train_data=make_data(),
            loss_fn=loss_fn,
            config=TrainConfig(max_steps=1),
        )
    with pytest.raises(ValueError, match="out_dir"):
        Trainer(
            model,
            opt,
            train_data=make_data(),
            loss_fn=loss_fn,
            config=TrainConfig(max_steps=1),
            progress=False,
        ).fit(resume=True)


def test_single_process_helpers_and_model_io(tmp_path):
    assert is_main_process() and world_size() == 1 and distributed.rank() == 0
    barrier()  # no-op
    assert distributed.all_reduce_mean({"a": 2.0}) == {"a": 2.0}
    model = make_model(seed=1)
    wrapped = nn.DataParallel(model)
    assert unwrap(wrapped) is model
    save_model(wrapped, tmp_path / "w.safetensors")
    assert set(load_safetensors(tmp_path / "w.safetensors")) == set(model.state_dict())
    other = make_model(seed=2)
    load_model(other, tmp_path / "w.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    with pytest.raises(FileNotFoundError):
        load_model(other, tmp_path / "missing.safetensors")


def test_progress_bar_loss_only_and_bad_metrics(capsys):
    model = make_model()
    opt, _ = make_opt_sched(model)

    def plain_loss(m, batch):  # a bare loss (no metrics dict) is accepted
        return loss_fn(m, batch)[0]

    hist = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=plain_loss,
        config=TrainConfig(max_steps=3, batch_size=8, log_every=1),
        progress=True,
    ).fit()
    assert hist["steps"] == 3 and hist["tokens_per_s"] is None and "acc" not in hist["train"]
    assert hist["evals"] == [] and hist["eval"] == {}  # no eval_fn: no eval records
    assert "3/3" in capsys.readouterr().err  # tqdm wrote to stderr
    bad_eval = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=loss_fn,
        eval_fn=lambda m: {"names": ["a", "b"]},
        config=TrainConfig(max_steps=1, batch_size=8),
        progress=False,
    )
    with pytest.raises(ValueError, match="names"):
        bad_eval.fit()
    bad_loss = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=lambda m, b: (m(b[0]), {}),
        config=TrainConfig(max_steps=1, batch_size=8),
        progress=False,
    )
    with pytest.raises(ValueError, match="scalar"):
        bad_loss.fit()
