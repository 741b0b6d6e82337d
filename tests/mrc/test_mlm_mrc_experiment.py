"""The ``mlm-mrc`` experiment at its smoke preset: schema-valid, learning, cached pretraining."""

from __future__ import annotations

import dataclasses

import pytest

from kexue.experiments import get


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("KEXUE_CACHE", str(tmp_path_factory.mktemp("cache")))
    module = get("mlm-mrc").load()
    out = tmp_path_factory.mktemp("mlm-mrc")
    first = module.run(module.PRESETS["smoke"], out, progress=False)
    # a second run reuses the cached pretrained BERT (only the MLM reader, to stay quick)
    again = module.run(
        dataclasses.replace(module.PRESETS["smoke"], readers=("mlm",)),
        tmp_path_factory.mktemp("again"),
        progress=False,
    )
    yield module, first, again, out
    mp.undo()


def test_smoke_result_is_valid(smoke):
    module, res, _, out = smoke
    res.validate(out)
    assert set(module.PRESETS) == {"smoke", "quick", "full"}
    assert [p.file for p in res.plots] == ["loss.png"] and res.notes and res.headline
    assert any(c.article == "0.7745" for c in res.comparison)


def test_smoke_learns_and_reuses_the_cache(smoke):
    _, res, again, _ = smoke
    m = res.metrics
    for kind in ("mlm", "ar", "span"):
        assert m[f"{kind}_loss_end"] < 0.85 * m[f"{kind}_loss_start"], kind  # training works
        assert 0 <= m[f"{kind}_em"] <= 1 and m[f"{kind}_qps_32"] > 0
    assert m["lm_cached"] is False and again.metrics["lm_cached"] is True
    assert again.metrics["lm_perplexity"] == m["lm_perplexity"]
    assert m["lm_perplexity"] < m["lm_vocab"]  # the pretrained BERT beats a uniform guess


def test_config_validation():
    module = get("mlm-mrc").load()
    with pytest.raises(ValueError, match="readers"):
        module.Config(readers=("crf",))
    with pytest.raises(ValueError, match="stride"):
        module.Config(max_passage_len=10, stride=20)
    with pytest.raises(ValueError, match="steps"):
        module.Config(steps=0)
    with pytest.raises(ValueError, match="lr"):
        module.Config(lr=2.0)
