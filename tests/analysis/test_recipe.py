"""The BN on/off harness: the network, the probe record written through the Trainer's eval_fn,
and that probing does not change the training trajectory."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kexue.analysis.recipe import ProbeConfig, probe_metrics, summarize, train_with_probes, vgg_cnn


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > x[:, 0, 14:].mean((1, 2))).long()  # a learnable rule
    return x, y


def test_vgg_cnn_same_network_with_bn_inserted():
    plain, bn = vgg_cnn(batchnorm=False, widths=(4, 8)), vgg_cnn(batchnorm=True, widths=(4, 8))
    assert [type(m) for m in bn if not isinstance(m, nn.BatchNorm2d)] == [type(m) for m in plain]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn) == 4
    assert plain(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="widths"):
        vgg_cnn(batchnorm=True, widths=())


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"every": 0}, "every"), ({"multipliers": ()}, "multipliers"), ({"batch_size": 1}, "batch_size"),
     ({"eig_iters": 0}, "eig_iters"), ({"eig_tol": -1.0}, "eig_tol")],
)  # fmt: skip
def test_probe_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        ProbeConfig(**kw)


def test_probing_does_not_change_the_trajectory(tmp_path):
    train, test = _data(256), _data(64, seed=1)
    kw = {"lr": 0.05, "seed": 3, "steps": 8, "batch_size": 32, "train": train, "test": test,
          "widths": (2, 4), "log_every": 2}  # fmt: skip
    probe = ProbeConfig(every=4, batch_size=16, eig_iters=2)
    a = train_with_probes(batchnorm=True, probe=probe, out_dir=tmp_path / "a", **kw)
    b = train_with_probes(batchnorm=True, probe=None, out_dir=tmp_path / "b", **kw)
    assert [loss for _, loss in a["train"]] == [loss for _, loss in b["train"]]
    assert a["final_acc"] == b["final_acc"] and not a["diverged"]
    ra = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(r) for r in ra if json.loads(r)["event"] == "eval"]
    assert [e["step"] for e in evals] == [4, 8] and all("probe_beta" in e for e in evals)
    s = summarize(a)
    assert s["beta"] > 0 and s["eig"] > 0 and s["range"] >= 0


def test_probe_metrics_restore_mode_and_use_batch_statistics():
    torch.manual_seed(0)
    model = vgg_cnn(batchnorm=True, widths=(2, 4)).eval()
    x, y = _data(16)
    out = probe_metrics(model, (x, y), 0.1, ProbeConfig(batch_size=16, eig_iters=3))
    assert not model.training
    assert out["lambda_max_train"] != out["lambda_max_eval"]  # different functions for BN nets
    model.train()
    ref = nn.functional.cross_entropy(model(x), y).item()  # batch statistics
    assert out["probe_loss"] == pytest.approx(ref, rel=1e-5)


def test_divergence_is_reported_not_raised(tmp_path):
    train, test = _data(128), _data(32, seed=1)
    train[0][64:, 0, 0, 0] = float("inf")  # half the batches blow up to a non-finite loss
    run = train_with_probes(
        batchnorm=False, lr=0.1, seed=0, steps=20, batch_size=32, train=train, test=test,
        probe=None, out_dir=tmp_path, widths=(2, 4),
    )  # fmt: skip
    assert run["diverged"] and run["final_acc"] != run["final_acc"]  # NaN
