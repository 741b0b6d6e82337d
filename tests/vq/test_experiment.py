"""The vq-vae experiment at its smoke preset, end to end through the runner: it learns."""

from __future__ import annotations

import json
import math

import pytest

from kexue.experiments import vq_vae
from kexue.experiments.runner import reproduce, resolve_config


def test_smoke_preset_learns(tmp_path):
    res = reproduce("vq-vae", "smoke", tmp_path, progress=False)
    m = res.metrics
    # reconstruction well below predicting the mean image; prior below the uniform ln K
    assert m["test_mse"] < 0.5 * m["mse_mean_image"], m
    assert m["prior_nll_per_code"] < math.log(32) - 0.3, m
    assert 0 < m["usage"] <= 1 and 1 <= m["perplexity"] <= 32
    assert math.isclose(m["test_psnr"], 10 * math.log10(1 / m["test_mse"]))
    assert {p.file for p in res.plots} == {"reconstructions.png", "samples.png"}
    for p in res.plots:
        assert (tmp_path / p.file).stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["headline"] == res.headline
    assert (tmp_path / "vqvae" / "model.safetensors").is_file()


def test_config_validation():
    for key, value in [("vq_steps", "0"), ("ema_decay", "1.0"), ("vq_lr", "0"), ("num_codes", "1")]:
        with pytest.raises(ValueError, match=key):
            resolve_config(vq_vae, "smoke", {key: value})
