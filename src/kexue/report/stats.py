r"""The verdict rule of every ranking kexue reports: a two-sided paired t-test over seeds.

For per-seed scores $a_i, b_i$ ($i = 1..n$, the same seeds), $d_i = a_i - b_i$,
$t = \bar d / (s_d / \sqrt n)$ with $n - 1$ degrees of freedom. A difference "holds" when
$p < 0.05$; otherwise it is "within noise". With fewer than 3 seeds there is no ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ALPHA", "mean_sd", "paired_t_test", "rank", "student_t_sf"]

ALPHA = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    # Lentz's continued fraction for the regularised incomplete beta function
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    r"""Two-sided tail $P(|T| \ge |t|)$ of Student's t with ``df`` degrees of freedom,
    $I_{df/(df+t^2)}(df/2, 1/2)$."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(xs)
    if n == 0:
        raise ValueError("mean_sd of no values")
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, sd


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(t, two-sided p)`` of the paired differences ``a - b`` (the same seeds, in order).

    Identical differences (zero spread) give ``t = ±inf, p = 0`` unless they are all 0
    (``t = 0, p = 1``).

    Raises:
        ValueError: lengths differ or fewer than 2 pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_t_test needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError("paired_t_test needs at least 2 pairs")
    d = [x - y for x, y in zip(a, b, strict=True)]
    m, sd = mean_sd(d)
    if sd == 0:
        return (0.0, 1.0) if m == 0 else (math.copysign(math.inf, m), 0.0)
    t = m / (sd / math.sqrt(len(d)))
    return t, student_t_sf(t, len(d) - 1)


def rank(name_a: str, a: Sequence[float], name_b: str, b: Sequence[float]) -> str:
    """A one-line verdict: ``"A > B (paired t-test over n seeds, p = ...)"``, ``"within
    noise (...)"``, or ``"one seed: no ranking"`` when fewer than 3 seeds."""
    if len(a) < 3:
        return f"{len(a)} seed(s): no ranking (needs >= 3)"
    t, p = paired_t_test(a, b)
    test = f"paired t-test over {len(a)} seeds, p = {p:.3f}"
    if p < ALPHA:
        return f"{name_a} > {name_b} ({test})" if t > 0 else f"{name_b} > {name_a} ({test})"
    return f"within noise ({test})"
