"""Timing helpers for the optimizer benchmark (``benchmarks/optim.py``) and the experiment.

Two measurements:

* :func:`embedding_step_times` -- time of ``optimizer.step()`` alone on a ``(v, d)`` embedding
  table plus a small dense layer, where each step touches a fraction of the rows (gradients are
  written before the clock starts; the optimizer must coalesce/scan them itself);
* :func:`lookahead_overhead` -- per-step time of ``Lookahead(Adam)`` against ``Adam`` on a small
  MLP, measured in interleaved rounds so that load from other processes hits both alike.

Times are wall-clock medians in milliseconds; the machine is usually shared, so report them with
the conditions (threads, load) and compare only ratios from one run.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kexue.core import timing
from kexue.optim.lazy import Lazy
from kexue.optim.lookahead import Lookahead

EMBEDDING_VARIANTS = (
    "adam",
    "adam-foreach",
    "adam-fused",
    "sparse-adam",
    "lazy-fast-sparse",
    "lazy-fast-dense",
    "lazy-generic-dense",
)


def time_calls(
    fn: Callable[[], Any],
    before: Callable[[int], Any] | None = None,
    *,
    warmup: int = 2,
    repeats: int = 10,
) -> list[float]:
    """Durations of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones, in milliseconds
    (:func:`kexue.core.timing.time_calls`; ``before(i)`` runs outside the timed region)."""
    t = timing.time_calls(fn, warmup=warmup, repeats=repeats, before=before)
    return [w * 1e3 for w in t.wall]


def _make_optimizer(
    variant: str, emb: nn.Parameter, dense: Sequence[nn.Parameter], lr: float
) -> Callable[[], Any]:
    params = [emb, *dense]
    if variant == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif variant == "adam-foreach":
        opt = torch.optim.Adam(params, lr=lr, foreach=True)
    elif variant == "adam-fused":
        opt = torch.optim.Adam(params, lr=lr, fused=True)
    elif variant == "sparse-adam":
        a, b = torch.optim.SparseAdam([emb], lr=lr), torch.optim.Adam(list(dense), lr=lr)
        return lambda: (a.step(), b.step())
    elif variant.startswith("lazy-"):
        opt = Lazy(
            torch.optim.Adam(params, lr=lr),
            params=[emb],
            fast_path=None if "fast" in variant else False,
        )
    else:
        raise ValueError(f"variant must be one of {EMBEDDING_VARIANTS}, got {variant!r}")
    return opt.step


def embedding_step_times(
    variants: Sequence[str] = EMBEDDING_VARIANTS,
    *,
    num_rows: int = 1_000_000,
    dim: int = 128,
    touched: float = 0.01,
    hidden: int = 128,
    warmup: int = 2,
    repeats: int = 8,
    seed: int = 0,
    progress: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Median ``step()`` time of each optimizer variant on a row-sparse embedding workload.

    The model is a ``(num_rows, dim)`` table plus ``Linear(dim, hidden)``. Each step touches
    ``round(touched * num_rows)`` distinct random rows; dense variants see a dense gradient
    that is zero elsewhere, ``sparse-adam``/``lazy-fast-sparse`` an uncoalesced sparse COO
    gradient (as ``nn.Embedding(sparse=True)`` produces). Variants run one after another, so
    only one table's optimizer state is alive at a time.

    Args:
        variants: names from :data:`EMBEDDING_VARIANTS`.
        num_rows: ``v``.
        dim: ``d``.
        touched: fraction of rows with a gradient per step, in ``(0, 1]``.
        hidden: output size of the dense layer.
        warmup: untimed steps per variant.
        repeats: timed steps per variant.
        seed: RNG seed for rows and gradient values.
        progress: called with a message before each variant.

    Returns:
        One dict per variant: ``variant``, ``grad`` (``"dense"``/``"sparse"``), ``ms`` (median),
        ``ms_min`` (fastest step), ``ms_all`` (every timed step).

    Raises:
        ValueError: unknown variant or ``touched`` outside ``(0, 1]``.
    """
    if not 0 < touched <= 1:
        raise ValueError(f"touched must lie in (0, 1], got {touched}")
    for v in variants:
        if v not in EMBEDDING_VARIANTS:
            raise ValueError(f"variant must be one of {EMBEDDING_VARIANTS}, got {v!r}")
    g = torch.Generator().manual_seed(seed)
    n_touch = max(1, round(touched * num_rows))
    n_sets = 4
    row_sets = [torch.randperm(num_rows, generator=g)[:n_touch] for _ in range(n_sets)]
    values = [torch.randn(n_touch, dim, generator=g) * 1e-2 for _ in range(n_sets)]
    results = []
    for variant in variants:
        if progress is not None:
            progress(variant)
        sparse = variant in ("sparse-adam", "lazy-fast-sparse")
        emb = nn.Parameter(torch.randn(num_rows, dim, generator=g) * 0.02)
        lin = nn.Linear(dim, hidden)
        dense_params = list(lin.parameters())
        for p in dense_params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-2
        dense_grad = None if sparse else torch.zeros(num_rows, dim)
        last: list[torch.Tensor | None] = [None]

        def before(i: int, emb=emb, sparse=sparse, dense_grad=dense_grad, last=last) -> None:
            rows, vals = row_sets[i % n_sets], values[i % n_sets]
            if sparse:
                emb.grad = torch.sparse_coo_tensor(
                    rows[None], vals, (num_rows, dim), check_invariants=False
                )
            else:
                if last[0] is not None:
                    dense_grad.index_fill_(0, last[0], 0.0)
                dense_grad.index_copy_(0, rows, vals)
                last[0] = rows
                emb.grad = dense_grad

        step = _make_optimizer(variant, emb, dense_params, lr=1e-3)
        ms = time_calls(step, before, warmup=warmup, repeats=repeats)
        results.append(
            {
                "variant": variant,
                "grad": "sparse" if sparse else "dense",
                "ms": statistics.median(ms),
                "ms_min": min(ms),
                "ms_all": ms,
            }
        )
        del emb, lin, dense_params, dense_grad, step, before
        gc.collect()
    return results


def _mlp(seed: int, sizes: Sequence[int]) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def lookahead_overhead(
    *,
    sizes: Sequence[int] = (784, 256, 256, 10),
    k: int = 5,
    rounds: int = 40,
    steps_per_round: int = 25,
    include_peer: bool = True,
) -> dict[str, Any]:
    """Per-step time of ``Adam``, ``Lookahead(Adam)`` (and the peer's) on an MLP, interleaved.

    Each round times ``steps_per_round`` consecutive ``step()`` calls of each optimizer in turn
    (a multiple of ``k`` keeps the number of synchronisations fixed); the median over rounds of
    the per-step mean is reported.

    Args:
        sizes: layer widths of the MLP.
        k: Lookahead period.
        rounds: interleaved rounds.
        steps_per_round: steps per optimizer per round.
        include_peer: also time ``pytorch_optimizer.Lookahead`` if it is installed.

    Returns:
        ``{"us": {name: median us/step}, "us_min": {name: fastest round's us/step},
        "overhead": {name: median over rounds of the per-round time ratio to adam, minus 1},
        "overhead_min": {name: ratio of fastest rounds, minus 1}, "params": int}``. Other
        processes only ever add time, so the fastest rounds are the least disturbed estimate.
    """
    makers: dict[str, Callable[[nn.Module], Callable[[], Any]]] = {
        "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3).step,
        "lookahead(adam)": lambda m: Lookahead(torch.optim.Adam(m.parameters(), lr=1e-3), k=k).step,
    }
    if include_peer:
        try:
            import pytorch_optimizer

            makers["pytorch_optimizer.Lookahead(adam)"] = lambda m: (
                pytorch_optimizer.Lookahead(torch.optim.Adam(m.parameters(), lr=1e-3), k=k).step
            )
        except ImportError:  # peers are an optional extra
            pass
    steps = {}
    n_params = 0
    for name, make in makers.items():
        m = _mlp(0, sizes)
        for p in m.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        n_params = sum(p.numel() for p in m.parameters())
        steps[name] = make(m)
        for _ in range(2 * k):
            steps[name]()
    per_round: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            per_round[name].append((time.perf_counter() - t0) / steps_per_round * 1e6)
    us = {name: statistics.median(v) for name, v in per_round.items()}
    best = {name: min(v) for name, v in per_round.items()}
    # ratio within each round (same load for both), then the median over rounds
    overhead = {
        n: statistics.median(a / b for a, b in zip(v, per_round["adam"])) - 1
        for n, v in per_round.items()
    }
    return {
        "us": us,
        "us_min": best,
        "overhead": overhead,
        "overhead_min": {n: best[n] / best["adam"] - 1 for n in best},
        "params": n_params,
    }
