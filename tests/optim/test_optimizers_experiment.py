"""The ``optimizers`` experiment at its smoke preset returns a schema-valid results dict."""

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
    assert {p["file"] for p in results["plots"]} == {"lookahead_mnist.png", "lazy_text.png"}
    assert set(module.PRESETS) == {"smoke", "quick", "full"}
    assert results["notes"] and results["headline"]


def test_smoke_metrics_are_sane(smoke) -> None:
    _, results, _ = smoke
    m = results["metrics"]
    for key in ("mnist_sgd_test_acc", "mnist_adam_test_acc", "mnist_lookahead_adam_test_acc"):
        assert 0.0 <= m[key] <= 1.0
    assert m["mnist_adam_test_acc"] > 0.2  # better than chance (0.1) even after a few steps
    for key in ("adam", "lazy_freeze", "lazy_decay"):
        assert 0.0 <= m[f"text_{key}_test_acc"] <= 1.0
        assert m[f"text_{key}_step_ms"] > 0
    assert m["text_vocab"] > 1000
