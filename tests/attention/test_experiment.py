"""The sparse-attention experiment at its smoke preset, end to end through the runner."""

from __future__ import annotations

import json
import math

import pytest

from kexue.experiments.runner import reproduce
from kexue.report import Result
from kexue.report.schema import validate_results


def test_smoke_preset_learns(tmp_path):
    res = reproduce("sparse-attention", "smoke", tmp_path, progress=False)
    assert isinstance(res, Result)
    validate_results(res, tmp_path)
    m = res.metrics
    uniform = m["test_bpc_uniform"]
    assert uniform == pytest.approx(math.log2(500), abs=0.01)
    for name in ("full", "local", "atrous", "sparse"):
        # four steps already beat guessing uniformly over the 500 characters by > 0.3 bits
        assert m[f"test_bpc_{name}"] < uniform - 0.3
        assert m[f"tokens_per_s_{name}"] > 0
    # the unigram baseline is computed in the run and lies below uniform
    assert m["test_bpc_unigram"] < uniform - 1
    assert m["test_bpc_bigram"] > 0
    # equal-time arm: every pattern, trained for one CPU second, beats the unigram model of the
    # same test text by a margin (so it learned context, not only character frequencies)
    for name in ("full", "local", "atrous", "sparse", "strided", "fixed"):
        assert m[f"long_test_bpc_{name}"] < m["test_bpc_unigram"] - 0.1, name
        assert m[f"long_tokens_per_s_{name}"] > 0
    row = next(c for c in res.comparison if c.quantity == "equal time, long context")
    assert row.verdict in ("holds", "partly", "does not hold")
    assert {p.file for p in res.plots} == {
        "patterns.png", "time_memory.png", "lm_bpc.png", "equal_time_bpc.png", "equal_time_cost.png"
    }  # fmt: skip
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["headline"] == res.headline
    assert Result.from_json(stored).metrics == res.metrics


@pytest.mark.parametrize(
    "override, field",
    [("window=0", "window"), ("rate=1", "rate"), ("bench_sizes=0", "bench_sizes"),
     ("lr=-1", "lr"), ("patterns=bogus", "patterns"), ("dropout=1.5", "dropout"),
     ("long_patterns=bogus", "long_patterns"), ("time_budget_s=0", "time_budget_s"),
     ("clock=gpu", "clock"), ("long_seeds=-1", "long_seeds"), ("long_rate=1", "long_rate"),
     ("long_seq_len=0", "long_seq_len"), ("long_eval_every_s=-2", "long_eval_every_s")],
)  # fmt: skip
def test_config_fields_are_validated(tmp_path, override, field):
    from kexue.experiments.runner import parse_overrides

    with pytest.raises(ValueError, match=field):
        reproduce("sparse-attention", "smoke", tmp_path, parse_overrides([override]), False)


def test_an_interrupted_run_resumes_and_reuses_finished_equal_time_runs(tmp_path):
    from kexue.experiments.runner import parse_overrides

    small = parse_overrides(["patterns=full", "long_patterns=full,local", "time_budget_s=0.2"])
    first = reproduce("sparse-attention", "smoke", tmp_path, small, False)
    cached = sorted(p.name for p in (tmp_path / "equal_time").iterdir())
    assert cached == ["full_s0.json", "local_s0.json"]
    # interrupt after the first equal-time run: no results.json, one run to redo
    (tmp_path / "results.json").unlink()
    (tmp_path / "equal_time" / "local_s0.json").unlink()
    kept = (tmp_path / "equal_time" / "full_s0.json").read_text()
    again = reproduce("sparse-attention", "smoke", tmp_path, small, False, resume=True)
    assert (tmp_path / "equal_time" / "full_s0.json").read_text() == kept  # reused, not rerun
    assert again.metrics["long_test_bpc_full"] == first.metrics["long_test_bpc_full"]
    # the short-arm LM resumed from its final checkpoint: same weights, same test bpc
    assert again.metrics["test_bpc_full"] == first.metrics["test_bpc_full"]
    with pytest.raises(ValueError, match="finished run"):
        reproduce("sparse-attention", "smoke", tmp_path, small, False, resume=True)
    (tmp_path / "results.json").unlink()
    other = parse_overrides(["patterns=full", "long_patterns=full,local", "time_budget_s=0.3"])
    with pytest.raises(ValueError, match="different config.*time_budget_s"):
        reproduce("sparse-attention", "smoke", tmp_path, other, False, resume=True)
    (tmp_path / "equal_time" / "full_s0.json").write_text("{not json")
    with pytest.raises(ValueError, match="full_s0.json: not a finished equal-time run"):
        reproduce("sparse-attention", "smoke", tmp_path, small, False, resume=True)
