"""Bit-exact resume: 2N straight steps == N steps + fresh Trainer(resume=True) + N steps."""

from __future__ import annotations

import json

import pytest
import torch

from kexue.train import TrainConfig, Trainer, latest_checkpoint, load_checkpoint

from ._tiny import loss_fn, make_data, make_model, make_opt_sched, make_trainer

N = 10  # 53 examples / batch 8 -> 7 batches per epoch: step 10 is mid-epoch 1


def _trainer(out, max_steps, model_seed=0, **kw):
    return make_trainer(
        out,
        max_steps,
        model_seed=model_seed,
        eval_fn=lambda m: {"rand": float(torch.rand(()))},  # consumes RNG: must not leak
        log_every=3,
        eval_every=4,
        seed=3,
        **kw,
    )


@pytest.mark.parametrize("ckpt_every", [None, 4])
def test_resume_is_bit_exact(tmp_path, ckpt_every):
    _check_resume(tmp_path, N, ckpt_every)


def test_resume_at_an_epoch_boundary_is_bit_exact(tmp_path):
    _check_resume(tmp_path, 7, None)  # 7 batches per epoch: stop exactly at the end of epoch 0


def _check_resume(tmp_path, N, ckpt_every):
    straight = _trainer(tmp_path / "a", 2 * N, ckpt_every=ckpt_every)
    h_straight = straight.fit()

    first = _trainer(tmp_path / "b", N, ckpt_every=ckpt_every)
    first.fit()
    # a "new process": different initial weights, RNG scrambled, then resume
    torch.manual_seed(12345)
    second = _trainer(tmp_path / "b", 2 * N, model_seed=99, ckpt_every=ckpt_every)
    h_resumed = second.fit(resume=True)

    assert h_resumed["steps"] == h_straight["steps"] == 2 * N
    sa, sb = straight.model.state_dict(), second.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # optimizer state and LR schedule continue too
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert h_resumed["train"]["loss"] == h_straight["train"]["loss"]

    # metrics.jsonl of the resumed run equals the straight run's, step for step
    def steps(path):
        return [
            (r["event"], r["step"], r.get("loss"))
            for r in map(json.loads, path.read_text().splitlines())
        ]

    ra, rb = steps(tmp_path / "a" / "metrics.jsonl"), steps(tmp_path / "b" / "metrics.jsonl")
    # b has extra records at step N (end of the first run) and its first log window after the
    # resume is shorter; from the next full window on, both logs agree exactly
    assert [r for r in rb if r[1] > N + 3] == [r for r in ra if r[1] > N + 3]
    assert len([r for r in ra if r[1] > N + 3]) >= 3


def test_resume_true_without_checkpoint_warns_and_starts_fresh(tmp_path):
    t = _trainer(tmp_path / "c", 3)
    with pytest.warns(UserWarning, match="no checkpoint"):
        h = t.fit(resume=True)
    assert h["steps"] == 3


def test_resume_from_explicit_path_and_checkpoint_contents(tmp_path):
    t = _trainer(tmp_path / "d", 6, ckpt_every=2, keep_last=2)
    t.fit()
    root = tmp_path / "d" / "checkpoints"
    names = sorted(p.name for p in root.iterdir())
    assert names == ["step_00000004", "step_00000006"]  # keep_last=2, no temporaries left
    path = latest_checkpoint(root)
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "state.json",
        "state.safetensors",
    ]
    state = load_checkpoint(path)
    assert state["step"] == 6 and state["epoch"] == 0 and state["batch_in_epoch"] == 6
    assert isinstance(state["optimizer"]["state"][0]["exp_avg"], torch.Tensor)
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    t2 = _trainer(tmp_path / "e", 8)
    h = t2.fit(resume=root / "step_00000004")
    assert h["steps"] == 8


class _Lookahead:
    """A minimal optimizer wrapper (slow weights every k steps) with its own state."""

    def __init__(self, base: torch.optim.Optimizer, k: int = 3, alpha: float = 0.5) -> None:
        self.base, self.k, self.alpha, self.counter = base, k, alpha, 0
        self.param_groups = base.param_groups
        self.params = [p for g in base.param_groups for p in g["params"]]
        self.slow = [p.detach().clone() for p in self.params]

    def zero_grad(self) -> None:
        self.base.zero_grad()

    def step(self) -> None:
        self.base.step()
        self.counter += 1
        if self.counter % self.k == 0:
            with torch.no_grad():
                for s, p in zip(self.slow, self.params):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)

    def state_dict(self) -> dict:
        return {
            "base": self.base.state_dict(),
            "slow": dict(enumerate(self.slow)),
            "counter": self.counter,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.base.load_state_dict(sd["base"])
        for i, s in sd["slow"].items():
            self.slow[i].copy_(s)
        self.counter = sd["counter"]


def _wrapped_trainer(out, max_steps, model_seed=0, num_workers=0):
    model = make_model(seed=model_seed)
    base, sched = make_opt_sched(model)
    cfg = TrainConfig(max_steps=max_steps, batch_size=8, seed=11, num_workers=num_workers)
    return Trainer(
        model,
        _Lookahead(base),
        train_data=make_data(),
        loss_fn=loss_fn,
        scheduler=sched,
        config=cfg,
        out_dir=out,
        progress=False,
    )


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_bit_exact_with_optimizer_wrapper_and_workers(tmp_path, num_workers):
    a = _wrapped_trainer(tmp_path / "a", 2 * N, num_workers=num_workers)
    a.fit()
    _wrapped_trainer(tmp_path / "b", N, num_workers=num_workers).fit()
    b = _wrapped_trainer(tmp_path / "b", 2 * N, model_seed=5, num_workers=num_workers)
    b.fit(resume=True)
    assert b.optimizer.counter == 2 * N
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    for s, t in zip(a.optimizer.slow, b.optimizer.slow):
        assert torch.equal(s, t)


def test_resume_truncates_metrics_written_after_the_checkpoint(tmp_path):
    _trainer(tmp_path, 8, ckpt_every=4, keep_last=None).fit()
    # pretend the run died after step 8's records but before its checkpoint, mid-line
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "step_00000008")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "st')
    t = _trainer(tmp_path, 8, ckpt_every=4, keep_last=None)
    t.fit(resume=True)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs]
    assert steps == sorted(steps)  # nothing after step 4 survived from the first run
    assert [(r["event"], r["step"]) for r in recs] == [
        ("train", 3),
        ("eval", 4),
        ("train", 6),
        ("eval", 8),
        ("train", 8),
    ]


def test_fresh_start_in_used_dir_drops_old_checkpoints(tmp_path):
    _trainer(tmp_path, 12, ckpt_every=4).fit()
    with pytest.warns(UserWarning, match="deleting"):
        _trainer(tmp_path, 3).fit(overwrite=True)  # fresh, shorter run in the same out_dir
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_00000003"
    t = _trainer(tmp_path, 5)
    assert t.fit(resume=True)["steps"] == 5


def test_resume_on_changed_data_is_refused_not_a_hang(tmp_path):
    """Checkpoint mid-epoch on 53 examples, then resume on 9: the saved position is past the
    end of the new epoch. It once looped forever at 100% CPU; now it names the change."""
    from kexue.train import TrainConfig, Trainer

    from ._tiny import make_model, make_opt_sched

    first = make_trainer(tmp_path / "r", 6, ckpt_every=6, seed=1)
    first.fit()

    def small(max_steps):
        model = make_model()
        opt, sched = make_opt_sched(model)
        return Trainer(
            model, opt, train_data=make_data(n=9), loss_fn=loss_fn, scheduler=sched,
            config=TrainConfig(max_steps=max_steps, batch_size=8, ckpt_every=6, seed=1),
            out_dir=tmp_path / "r", progress=False,
        )  # fmt: skip

    with pytest.raises(ValueError, match="training data changed"):
        small(12).fit(resume=True)
