"""kexue.report.stats: the paired t-test of every ranking, against scipy (an independent
implementation), and the verdict strings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.report.stats import mean_sd, paired_t_test, rank, student_t_sf

scipy_stats = pytest.importorskip("scipy.stats")


@given(
    st.floats(-50, 50, allow_nan=False),
    st.floats(0.5, 60),
)
@settings(max_examples=200, deadline=None)
def test_t_tail_matches_scipy(t, df):
    want = 2 * scipy_stats.t.sf(abs(t), df)
    assert student_t_sf(t, df) == pytest.approx(want, rel=1e-9, abs=1e-14)


@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=2, max_size=8))
@settings(max_examples=200, deadline=None)
def test_paired_t_matches_scipy(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    d = [x - y for x, y in pairs]
    if mean_sd(d)[1] < 1e-9:
        return
    t, p = paired_t_test(a, b)
    want = scipy_stats.ttest_rel(a, b)
    assert t == pytest.approx(want.statistic, rel=1e-7, abs=1e-9)
    assert p == pytest.approx(want.pvalue, rel=1e-7, abs=1e-12)


def test_hand_values_and_verdicts():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3
    t, p = paired_t_test([2, 3, 4], [1, 1, 1])
    assert t == pytest.approx(2 * math.sqrt(3)) and 0.05 < p < 0.1
    assert rank("A", [2, 3, 4], "B", [1, 1, 1]).startswith("within noise")
    assert rank("A", [1.0, 1.1, 0.9, 1.0], "B", [0.0, 0.1, -0.1, 0.05]).startswith("A > B")
    assert rank("A", [0.0, 0.1, -0.1, 0.05], "B", [1.0, 1.1, 0.9, 1.0]).startswith("B > A")
    assert "no ranking" in rank("A", [1, 2], "B", [0, 1])
    assert paired_t_test([1, 1], [1, 1]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t_test([1, 2], [1])
