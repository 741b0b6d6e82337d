r"""Time and peak extra memory of attention implementations vs sequence length (CPU).

Used by ``benchmarks/attention.py`` (the table) and the ``sparse-attention`` experiment (plots).
Cost model being checked (Su 2019, Child et al. 2019): full attention is :math:`O(n^2 e)`, local
:math:`O(n w e)`, atrous :math:`O(n^2 e / r)`, sparse :math:`O(n (n / r + w) e)`.

Measurement, honestly stated:

* **time**: wall clock (``time.perf_counter``), best of ``repeats``, of one forward and of one
  forward + backward (``out.backward(grad)``) on ``(b, h, n, e)`` fp32 tensors;
* **peak extra memory**: increase of the process's resident set during one forward + backward
  (:func:`kexue.core.timing.peak_extra_mib`), measured in a second phase. It includes the output
  and the ``q, k, v`` gradients; inputs and precomputed masks are allocated before the baseline.
  ``None`` where ``/proc`` or glibc is unavailable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kexue.attention.functional import (
    atrous_attention,
    fixed_attention,
    local_attention,
    sparse_attention,
    strided_attention,
)
from kexue.attention.patterns import pattern_mask
from kexue.core.checks import check_positive_int
from kexue.core.timing import peak_extra_mib as peak_rss_mib

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SLOW_FORWARD_S = 1.0  # a warm-up forward slower than this: one timed call, no backward warm-up


@dataclass(frozen=True)
class Method:
    """One implementation to benchmark.

    Attributes:
        name: table label.
        build: ``build(n) -> fn(q, k, v)`` (precomputes masks outside the timed region).
        backward: whether fwd+bwd is measured (FlexAttention has no CPU backward).
    """

    name: str
    build: Callable[[int], AttnFn]
    backward: bool = True


def default_methods(window: int = 64, rate: int = 128, keys: int = 128) -> list[Method]:
    """SDPA full, SDPA + dense local mask, our local/atrous/sparse (atrous twice: fixed ``rate``
    and ``rate = n / keys``, i.e. a constant ``keys`` per query) and the Sparse Transformer's
    strided/fixed with stride ``rate``."""

    def sdpa_mask(n: int) -> AttnFn:
        mask = pattern_mask("local", n, window=window)
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return [
        Method("SDPA full", lambda n: lambda q, k, v: F.scaled_dot_product_attention(q, k, v)),
        Method(f"SDPA + dense local({window}) mask", sdpa_mask),
        Method(f"local({window})", lambda n: lambda q, k, v: local_attention(q, k, v, window)),
        Method(f"atrous({rate})", lambda n: lambda q, k, v: atrous_attention(q, k, v, rate)),
        Method(
            f"atrous(n/{keys})",
            lambda n: lambda q, k, v: atrous_attention(q, k, v, max(1, n // keys)),
        ),
        Method(f"sparse({rate})", lambda n: lambda q, k, v: sparse_attention(q, k, v, rate)),
        Method(f"strided({rate})", lambda n: lambda q, k, v: strided_attention(q, k, v, rate)),
        Method(f"fixed({rate})", lambda n: lambda q, k, v: fixed_attention(q, k, v, rate)),
    ]


def flex_method(window: int = 64) -> Method:
    """Compiled FlexAttention with a sliding-window block mask (forward only on CPU); the
    ``create_block_mask`` and compile times are stored on the returned function's ``setup_s``."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention)

    def build(n: int) -> AttnFn:
        t0 = time.perf_counter()
        bm = create_block_mask(
            lambda b, h, i, j: (i - j).abs() <= window, None, None, n, n, device="cpu"
        )

        def fn(q, k, v):
            return compiled(q, k, v, block_mask=bm)

        fn.setup_s = time.perf_counter() - t0  # type: ignore[attr-defined]
        return fn

    return Method(f"FlexAttention local({window}) compiled", build, backward=False)


def _inputs(n: int, b: int, h: int, e: int, grad: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, e, generator=g).requires_grad_(grad) for _ in range(3))
    return q, k, v, torch.randn(b, h, n, e, generator=g)


def _run(fn: AttnFn, q, k, v, grad_out, backward: bool) -> None:
    if backward:
        fn(q, k, v).backward(grad_out)
        q.grad = k.grad = v.grad = None
    else:
        with torch.no_grad():
            fn(q, k, v)


def time_method(
    fn: AttnFn,
    n: int,
    *,
    b: int = 1,
    h: int = 8,
    e: int = 64,
    repeats: int = 2,
    backward: bool = True,
) -> dict[str, float]:
    """Best-of-``repeats`` wall-clock seconds of forward (``fwd_s``) and forward+backward
    (``fwd_bwd_s``, NaN if ``backward`` is False) on ``(b, h, n, e)`` inputs, and the process CPU
    seconds of those same calls (``fwd_cpu_s``, ``fwd_bwd_cpu_s``: with one thread on a busy
    machine, CPU time is the fairer comparison).

    The same protocol as :func:`run_benchmark` (one method, one size, no memory phase); raises
    what the method raises.
    """
    row = run_benchmark([n], [Method("fn", lambda _: fn, backward=backward)], b=b, h=h, e=e,
                        repeats=repeats, memory=False, skip_slow_s=math.inf)[0]  # fmt: skip
    if row["error"]:
        raise RuntimeError(f"time_method: {row['error']}")
    return {
        key: row[key] for key in ("fwd_s", "fwd_cpu_s", "warmup_s", "fwd_bwd_s", "fwd_bwd_cpu_s")
    }


def peak_extra_mib(
    fn: AttnFn, n: int, *, b: int = 1, h: int = 8, e: int = 64, backward: bool = True
) -> float | None:
    """Peak resident-memory increase (MiB) during one forward(+backward), inputs excluded
    (:func:`kexue.core.timing.peak_extra_mib`). Call after all timings."""
    q, k, v, go = _inputs(n, b, h, e, backward)
    return peak_rss_mib(lambda: _run(fn, q, k, v, go, backward))


def run_benchmark(
    sizes: list[int],
    methods: list[Method],
    *,
    b: int = 1,
    h: int = 8,
    e: int = 64,
    repeats: int = 2,
    memory: bool = True,
    skip_slow_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
    too_slow: set[str] | None = None,
) -> list[dict]:
    """Time every method at every size, then (second phase) measure peak memory.

    At each size the methods are timed round-robin: repeat ``r`` times one call of every
    method before repeat ``r + 1`` starts, so a burst of load on a shared machine slows one call
    of each method, not every call of one (the best of each method's calls is reported). Each
    method gets an untimed forward first (and compile, for FlexAttention) and an untimed
    fwd+bwd before its backward timings; a method whose first timed forward took over
    :data:`SLOW_FORWARD_S` (SDPA full at n = 16384) is timed once each, with no backward
    warm-up.

    Args:
        sizes: sequence lengths ``n``.
        methods: what to run.
        b: batch.
        h: heads.
        e: head dim.
        repeats: timed calls per method and size (best of).
        memory: also measure peak extra memory.
        skip_slow_s: skip larger sizes of a method once one fwd+bwd exceeds this.
        progress: called with a line per measurement.
        too_slow: names of methods already over ``skip_slow_s`` (skipped here; updated in
            place, so consecutive calls, one size each, skip like one call over all sizes).

    Returns:
        Rows ``{"method", "n", "fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s", "warmup_s",
        "setup_s", "peak_mib", "error"}`` (NaN/None if skipped or failed; ``error`` holds the
        exception text).
    """
    check_positive_int(repeats, "repeats")
    rows, built = [], {}
    too_slow = set() if too_slow is None else too_slow

    def fail(row: dict, exc: Exception) -> None:
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"

    for n in sizes:
        q, k, v, go = _inputs(n, b, h, e, True)
        plain = [x.detach() for x in (q, k, v)]  # forward-only kernels refuse grad inputs
        live = []  # [method, row, fn, slow, fwd timings, fwd+bwd timings]
        for m in methods:
            row = {"method": m.name, "n": n, "fwd_s": math.nan, "fwd_bwd_s": math.nan}
            row.update(fwd_cpu_s=math.nan, fwd_bwd_cpu_s=math.nan, warmup_s=math.nan)
            row.update(setup_s=math.nan, peak_mib=None, error=None)
            rows.append(row)
            if m.name in too_slow:
                row["error"] = "skipped (too slow)"
                continue
            try:
                fn = m.build(n)
                t0 = time.perf_counter()
                _run(fn, *plain, go, False)
                row["warmup_s"] = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - report in the table, keep going
                fail(row, exc)
                continue
            built[(m.name, n)] = fn
            live.append([m, row, fn, False, [], []])
        for backward in (False, True):
            if backward:  # warm-up of the backward
                for entry in live:
                    m, row, fn, slow = entry[:4]
                    if m.backward and not slow and not row["error"]:
                        try:
                            _run(fn, q, k, v, go, True)
                        except Exception as exc:  # noqa: BLE001
                            fail(row, exc)
            for r in range(repeats):
                for entry in live:
                    m, row, fn, slow, fwd, bwd = entry
                    if row["error"] or (slow and r > 0) or (backward and not m.backward):
                        continue
                    t0, c0 = time.perf_counter(), time.process_time()
                    try:
                        _run(fn, *((q, k, v) if backward else plain), go, backward)
                    except Exception as exc:  # noqa: BLE001
                        fail(row, exc)
                        continue
                    took = (time.perf_counter() - t0, time.process_time() - c0)
                    (bwd if backward else fwd).append(took)
                    if not backward and r == 0:  # the first timed forward decides
                        entry[3] = took[0] > SLOW_FORWARD_S
        for m, row, fn, _, fwd, bwd in live:
            if fwd:
                row["fwd_s"], row["fwd_cpu_s"] = min(w for w, _ in fwd), min(c for _, c in fwd)
            if bwd:
                row["fwd_bwd_s"] = min(w for w, _ in bwd)
                row["fwd_bwd_cpu_s"] = min(c for _, c in bwd)
            if hasattr(fn, "setup_s") and fwd:  # mask construction + compile (first call)
                row["setup_s"] = fn.setup_s + row["warmup_s"] - row["fwd_s"]
            if max(row["fwd_s"], row["fwd_bwd_s"] if m.backward else 0) > skip_slow_s:
                too_slow.add(m.name)
            if progress:
                progress(
                    f"{m.name:<40} n={n:<6} fwd {row['fwd_s']:.3f}s fwd+bwd "
                    f"{row['fwd_bwd_s']:.3f}s (CPU {row['fwd_cpu_s']:.3f}s / "
                    f"{row['fwd_bwd_cpu_s']:.3f}s)"
                )
        del q, k, v, go, plain
    if memory:
        for row in rows:
            fn = built.get((row["method"], row["n"]))
            if fn is None or row["error"]:
                continue
            m = next(x for x in methods if x.name == row["method"])
            row["peak_mib"] = peak_extra_mib(fn, row["n"], b=b, h=h, e=e, backward=m.backward)
            if progress:
                progress(f"{row['method']:<40} n={row['n']:<6} peak extra {row['peak_mib']} MiB")
    return rows


def markdown_table(rows: list[dict], reference: str = "SDPA full") -> str:
    """One markdown table: wall and CPU time of fwd and fwd+bwd, speed-ups of fwd+bwd vs
    ``reference`` (wall, CPU), peak extra memory."""
    ref = {r["n"]: (r["fwd_bwd_s"], r["fwd_bwd_cpu_s"]) for r in rows if r["method"] == reference}

    def ms(x: float) -> str:
        return "n/a" if x != x else f"{x * 1e3:.1f}"

    def ratio(a: float, b: float) -> str:
        return "n/a" if a != a or b != b or b <= 0 else f"{a / b:.1f}x"

    out = [
        "| method | n | fwd ms | fwd CPU ms | fwd+bwd ms | fwd+bwd CPU ms | speed-up (wall) "
        "| speed-up (CPU) | peak extra MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["error"]:
            out.append(f"| {r['method']} | {r['n']} | {r['error']} | | | | | | |")
            continue
        rw, rc = ref.get(r["n"], (math.nan, math.nan))
        setup = f" (+{r['setup_s']:.1f} s mask+compile)" if r["setup_s"] == r["setup_s"] else ""
        mem = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        out.append(
            f"| {r['method']} | {r['n']} | {ms(r['fwd_s'])}{setup} | {ms(r['fwd_cpu_s'])} | "
            f"{ms(r['fwd_bwd_s'])} | {ms(r['fwd_bwd_cpu_s'])} | {ratio(rw, r['fwd_bwd_s'])} | "
            f"{ratio(rc, r['fwd_bwd_cpu_s'])} | {mem} |"
        )
    return "\n".join(out)
