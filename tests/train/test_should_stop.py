"""Trainer(should_stop=...): clean early end (final eval + checkpoint), resume, no-op default."""

from __future__ import annotations

import pytest

from ._tiny import make_trainer


def test_should_stop_ends_after_the_step_it_returns_true(tmp_path):
    asked: list[int] = []

    def stop(tr):
        asked.append(tr.step)
        return tr.step == 4

    t = make_trainer(tmp_path, 20, eval_fn=lambda m: {"x": 1.0}, eval_every=3)
    t.should_stop = stop
    hist = t.fit()
    assert asked == [1, 2, 3, 4] and hist["steps"] == 4 and hist["stopped"] is True
    # an eval at step 3 (schedule) and a final one at step 4; the last checkpoint is step 4
    assert [e["step"] for e in hist["evals"]] == [3, 4]
    assert hist["checkpoint"].endswith("4")
    assert t.wall_time > 0


def test_without_should_stop_the_run_is_unchanged(tmp_path):
    a = make_trainer(tmp_path / "a", 7).fit()
    b = make_trainer(tmp_path / "b", 7)
    b.should_stop = lambda tr: False
    hb = b.fit()
    assert a["steps"] == hb["steps"] == 7 and a["stopped"] is hb["stopped"] is False
    assert a["train"]["loss"] == hb["train"]["loss"]


def test_stopped_run_resumes_and_should_stop_must_be_callable(tmp_path):
    t = make_trainer(tmp_path, 20)
    t.should_stop = lambda tr: tr.step >= 5
    assert t.fit()["steps"] == 5
    again = make_trainer(tmp_path, 20)  # no stop rule: the resumed run goes to the end
    assert again.fit(resume=True)["steps"] == 20
    from kexue.train import TrainConfig, Trainer

    from ._tiny import loss_fn, make_data, make_model

    m = make_model()
    with pytest.raises(TypeError, match="should_stop"):
        Trainer(m, lambda p: __import__("torch").optim.SGD(p, lr=0.1), train_data=make_data(),
                loss_fn=loss_fn, config=TrainConfig(max_steps=2), should_stop=3)  # fmt: skip
