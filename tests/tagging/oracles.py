"""Brute-force references for the tagging heads: enumerate all k^n tag paths of one sequence.

Everything here works on a single unpadded sequence (emissions ``(n, k)``) in float64 and is
written directly from the formulas, without calling the library.
"""

from __future__ import annotations

import itertools
import math

import torch


def paths(k: int, n: int) -> list[tuple[int, ...]]:
    """All k^n tag paths of length n."""
    return list(itertools.product(range(k), repeat=n))


def crf_score(em, trans, path, start=None, end=None) -> float:
    """s(y) = sum_k f_k(y_k) + sum_k g(y_{k-1}, y_k) (+ start(y_1) + end(y_n))."""
    s = sum(float(em[i, y]) for i, y in enumerate(path))
    s += sum(float(trans[a, b]) for a, b in zip(path[:-1], path[1:]))
    if start is not None:
        s += float(start[path[0]]) + float(end[path[-1]])
    return s


def _lse(xs: list[float]) -> float:
    m = max(xs)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))


def allowed_path(path, allowed=None, start_ok=None, end_ok=None) -> bool:
    """Is ``path`` legal under the constraint tensors (None = no constraint)?"""
    if allowed is not None and not all(bool(allowed[a, b]) for a, b in zip(path[:-1], path[1:])):
        return False
    if start_ok is not None and not bool(start_ok[path[0]]):
        return False
    if end_ok is not None and not bool(end_ok[path[-1]]):
        return False
    return True


def crf_table(em, trans, start=None, end=None, legal=None) -> dict:
    """{path: score} over all (legal) paths."""
    n, k = em.shape
    return {
        p: crf_score(em, trans, p, start, end) for p in paths(k, n) if legal is None or legal(p)
    }


def log_z(table: dict) -> float:
    return _lse(list(table.values()))


def marginals(table: dict, n: int, k: int) -> torch.Tensor:
    """P(y_s = j) as an (n, k) tensor."""
    z = log_z(table)
    out = torch.zeros(n, k, dtype=torch.float64)
    for p, s in table.items():
        w = math.exp(s - z)
        for i, y in enumerate(p):
            out[i, y] += w
    return out


def pair_counts(table: dict, k: int) -> torch.Tensor:
    """Expected transition counts sum_s P(y_{s-1}=i, y_s=j) as (k, k)."""
    z = log_z(table)
    out = torch.zeros(k, k, dtype=torch.float64)
    for p, s in table.items():
        w = math.exp(s - z)
        for a, b in zip(p[:-1], p[1:]):
            out[a, b] += w
    return out


def best(table: dict, nbest: int = 1) -> list[tuple[tuple[int, ...], float]]:
    """Top-n (path, score), best first."""
    return sorted(table.items(), key=lambda kv: -kv[1])[:nbest]


def memm_log_prob(em, trans, path, half_scale=False, backward=False) -> float:
    """log P(y|x) of the forward (or backward) MEMM from the product of local softmaxes."""
    n, k = em.shape
    sc = 0.5 if half_scale else 1.0
    if not backward:
        lp = float(em[0, path[0]]) - _lse([float(em[0, j]) for j in range(k)])
        for i in range(1, n):
            row = [sc * (float(trans[path[i - 1], j]) + float(em[i, j])) for j in range(k)]
            lp += row[path[i]] - _lse(row)
        return lp
    # backward: P(y_n) = softmax(f_n); P(y_i | y_{i+1}) ∝ exp(g(y_i, y_{i+1}) + f_i(y_i))
    lp = float(em[n - 1, path[n - 1]]) - _lse([float(em[n - 1, j]) for j in range(k)])
    for i in range(n - 2, -1, -1):
        row = [sc * (float(trans[j, path[i + 1]]) + float(em[i, j])) for j in range(k)]
        lp += row[path[i]] - _lse(row)
    return lp
