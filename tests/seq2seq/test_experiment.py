"""The ``bidirectional-decoding`` experiment at its smoke preset: valid Result, and it learns."""

from __future__ import annotations

import pytest

from kexue.experiments import get


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    module = get("bidirectional-decoding").load()
    out = tmp_path_factory.mktemp("bidirectional")
    return module, module.run(module.PRESETS["smoke"], out, progress=False), out


def test_smoke_result_is_valid(smoke) -> None:
    module, res, out = smoke
    res.validate(out)
    assert set(module.PRESETS) == {"smoke", "quick", "full"}
    assert {p.file for p in res.plots} == {"position_accuracy.png"}
    titles = [t.title for t in res.tables]
    assert titles == ["Title generation (character level, %)", "ROUGE-L / BLEU by reference length (%)",
                      "Sample outputs"]  # fmt: skip
    assert res.headline and res.notes and res.comparison


def test_smoke_learns(smoke) -> None:
    _, res, _ = smoke
    m = res.metrics
    for name in ("lcsts", "csl"):
        for kind in ("l2r", "bidirectional", "pseudo"):
            key = f"{name}_{kind}"
            assert m[f"{key}_loss_end"] < 0.3 * m[f"{key}_loss_start"], key
            assert m[f"{key}_rougeL"] > m[f"{name}_lead_rougeL"] + 0.1, key


def test_config_validation() -> None:
    module = get("bidirectional-decoding").load()
    with pytest.raises(ValueError, match="datasets"):
        module.Config(datasets=("thucnews",))
    with pytest.raises(ValueError, match="steps"):
        module.Config(steps=0)
    with pytest.raises(ValueError, match="eval_split"):
        module.Config(eval_split="dev")
    with pytest.raises(ValueError, match="seeds"):
        module.Config(seeds=())
    with pytest.raises(ValueError, match="embed_dim"):
        module.Config(embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="pointer"):
        module.Config(pointer=1)
    with pytest.raises(ValueError, match="label_smoothing"):
        module.Config(label_smoothing=1.0)
