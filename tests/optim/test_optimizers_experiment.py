"""The ``optimizers`` experiment at its smoke preset returns a valid Result and learns."""

from __future__ import annotations

import pytest

from kexue.experiments import get
from kexue.report.schema import validate_results


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    module = get("optimizers").load()
    out = tmp_path_factory.mktemp("optimizers")
    return module, module.run(module.PRESETS["smoke"], out, progress=False), out


def test_smoke_results_are_schema_valid(smoke) -> None:
    module, results, out = smoke
    validate_results(results, out)
    assert {p.file for p in results.plots} == {"lookahead_mnist.png", "lazy_text.png"}
    assert set(module.PRESETS) == {"smoke", "quick", "full"}
    assert results.notes and results.headline
    assert "0." not in results.headline.split("step")[-1]  # "3.6x slower", never "0.3x faster"


def test_smoke_runs_learn(smoke) -> None:
    _, results, _ = smoke
    m = results.metrics
    # an untrained classifier is at chance: 10% on MNIST, 25% on the balanced 4-way text task
    for key in ("sgd", "adam", "lookahead_adam"):
        assert m[f"mnist_{key}_test_acc"] > 0.3, key
    assert m["mnist_lookahead_adam_slow_test_acc"] > 0.3
    for key in ("adam", "lazy_freeze", "lazy_decay"):
        assert m[f"text_{key}_test_acc"] > 0.33, key
        assert m[f"text_{key}_step_ms"] > 0
    assert m["text_vocab"] > 1000


@pytest.mark.parametrize(
    "override", ["seeds=", "adam_lr=0", "alpha=1.5", "k=0", "mnist_epochs=-1", "sgd_momentum=2"]
)
def test_config_fields_are_validated(tmp_path, override) -> None:
    from kexue.experiments.runner import parse_overrides, reproduce

    field = override.split("=")[0]
    with pytest.raises(ValueError, match=field):
        reproduce("optimizers", "smoke", tmp_path, parse_overrides([override]), False)
