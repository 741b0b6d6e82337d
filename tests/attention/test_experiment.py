"""The sparse-attention experiment at its smoke preset, end to end through the runner."""

from __future__ import annotations

import json
import math

from kexue.experiments.runner import reproduce
from kexue.report.schema import validate_results


def test_smoke_preset(tmp_path):
    res = reproduce("sparse-attention", "smoke", tmp_path, progress=False)
    validate_results(res, tmp_path)
    for name in ("full", "local", "atrous", "sparse"):
        bpc = res["metrics"][f"test_bpc_{name}"]
        assert math.isfinite(bpc) and 0 < bpc < 12  # vocab 500: uniform is ~9 bits
        assert res["metrics"][f"tokens_per_s_{name}"] > 0
    assert {p["file"] for p in res["plots"]} == {"patterns.png", "time_memory.png", "lm_bpc.png"}
    assert json.loads((tmp_path / "results.json").read_text())["headline"] == res["headline"]
