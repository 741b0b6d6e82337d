"""The ``init-geometry`` experiment at its smoke preset returns a valid, typed Result."""

from __future__ import annotations

import dataclasses

import pytest

from kexue.experiments import get
from kexue.report.schema import validate_results


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    module = get("init-geometry").load()
    out = tmp_path_factory.mktemp("init-geometry")
    return module, module.run(module.PRESETS["smoke"], out, progress=False), out


def test_smoke_results_are_schema_valid(smoke):
    module, results, out = smoke
    validate_results(results, out)
    assert {p.file for p in results.plots} == {
        "angles.png",
        "variance.png",
        "orthogonality.png",
        "norms.png",
    }
    assert isinstance(results.headline, str) and results.notes


def test_smoke_numbers(smoke):
    _, results, _ = smoke
    m = results.metrics
    assert m["var_table_all_digits_match"] is True
    assert m["var_table_max_abs_err_quad"] < 5e-6
    assert m["laplace_max_rel_err_n_ge_50"] < 0.1
    assert m["orth_max_fro_err"] < 1e-10  # float64 QR
    rows = [c for c in results.comparison if c.quantity.startswith("Var(θ), n=")]
    assert len(rows) == 7 and all(r.article == r.ours and r.verdict == "holds" for r in rows)
    # qualitative: norm-preserving schemes stay within a band, x2 / x0.5 variance drift
    lin = "norm_ratio_constant_linear_"
    assert 0.3 < m[lin + "su"] < 3 and abs(m[lin + "orthogonal"] - 1) < 1e-3
    assert m[lin + "su_x2"] > 1e5 and m[lin + "su_x05"] < 1e-5
    assert 0.01 < m["norm_ratio_constant_relu_he"] < 10  # one network at width 64
    # the spread is reported with the geometric mean (one network here: min = mean = max)
    assert m[lin + "su_min"] == m[lin + "su"] == m[lin + "su_max"]


def test_presets_are_frozen_configs():
    module = get("init-geometry").load()
    assert set(module.PRESETS) == {"smoke", "quick", "full"}
    cfg = module.PRESETS["smoke"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.depth = 3


def test_library_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, kexue.init, kexue.init.studies; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("override", ["depth=-3", "depth=0", "nets=0", "widths=0", "mc_samples=1"])
def test_config_fields_are_validated(tmp_path, override):
    from kexue.experiments.runner import parse_overrides, reproduce

    field = override.split("=")[0]
    with pytest.raises(ValueError, match=field):
        reproduce("init-geometry", "smoke", tmp_path, parse_overrides([override]), False)


def test_geometric_mean_and_spread_over_networks(tmp_path):
    from kexue.experiments.runner import parse_overrides, reproduce

    res = reproduce(
        "init-geometry", "smoke", tmp_path, parse_overrides(["nets=3", "depth=6"]), False
    )
    m = res.metrics
    for key in ("norm_ratio_constant_relu_su_x2", "norm_ratio_constant_linear_su"):
        assert m[key + "_min"] < m[key] < m[key + "_max"]
