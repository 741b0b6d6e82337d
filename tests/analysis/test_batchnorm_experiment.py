"""The ``batchnorm`` experiment at its smoke preset, through the real CLI: it learns, and every
probe it recorded is finite and positive."""

from __future__ import annotations

import json
import math

import pytest

from kexue.cli import main


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("batchnorm")
    assert (
        main(["reproduce", "batchnorm", "--scale", "smoke", "--out", str(out), "--no-progress"])
        == 0
    )
    return json.loads((out / "results.json").read_text()), out


def test_smoke_writes_a_valid_result(smoke):
    res, out = smoke
    assert res["name"] == "batchnorm" and res["scale"] == "smoke" and res["headline"]
    assert {p["file"] for p in res["plots"]} == {"curves.png", "landscape.png", "lr_sweep.png"}
    for p in res["plots"]:
        assert (out / p["file"]).stat().st_size > 1000


def test_smoke_learns_and_probes_are_finite_and_positive(smoke):
    res, out = smoke
    m = res["metrics"]
    # chance on MNIST is 10%: the BN network must clearly beat an untrained one after 24 steps
    assert m["acc_bn_lr0p1"] > 0.3
    for net in ("plain", "bn"):
        records = [
            json.loads(line)
            for line in (out / "runs" / f"{net}_lr0.1_seed0" / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        evals = [r for r in records if r["event"] == "eval"]
        assert [r["step"] for r in evals] == [12, 24]
        for r in evals:
            for k in ("probe_loss", "probe_loss_min", "probe_loss_max", "probe_grad_norm",
                      "probe_grad_change_max", "probe_beta", "lambda_max_train", "lambda_max_eval"):  # fmt: skip
                assert math.isfinite(r[k]) and r[k] > 0, (net, k, r[k])
            assert r["probe_loss_min"] <= r["probe_loss_max"]
        train = [r["loss"] for r in records if r["event"] == "train"]
        if net == "bn":
            assert train[-1] < 0.8 * train[0]  # the training loss went down


@pytest.mark.parametrize(
    "override",
    ["steps=0", "lrs=", "lrs=-1", "multipliers=0", "momentum=1", "trains_acc=0", "widths=", "seeds=",
     "probe_batch=1", "eig_tol=-1", "threads=-1"],
)  # fmt: skip
def test_config_fields_are_validated(tmp_path, override, capsys):
    field = override.split("=")[0]
    rc = main(["reproduce", "batchnorm", "--scale", "smoke", "--out", str(tmp_path), override])
    assert rc == 2
    assert field in capsys.readouterr().err
