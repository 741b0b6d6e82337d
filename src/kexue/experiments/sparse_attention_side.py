r"""The ``sparse-attention`` experiment's kernel-benchmark methods, pattern pictures and its
equal-time, long-context arm (runs, plots, metrics, table, the "equal time" comparison row).

Kept out of :mod:`kexue.experiments.sparse_attention` so that file stays thin; ``cfg`` is its
``Config``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from kexue.attention import pattern_picture, pattern_title
from kexue.attention.bench import Method
from kexue.attention.functional import (
    atrous_attention,
    full_attention,
    local_attention,
    sparse_attention,
)
from kexue.attention.recipe import BudgetSetup, CharCorpus, equal_time_runs
from kexue.report import Result, mean_std, pm, rank_claim
from kexue.report.plots import bar_panels, line_panels, mask_images

__all__ = ["bench_methods", "equal_time_arm", "pattern_pictures"]


def bench_methods(cfg: Any) -> list[Method]:
    w, r = cfg.bench_window, cfg.bench_rate
    return [
        Method("SDPA full", lambda n: lambda q, k, v: full_attention(q, k, v)),
        Method(f"local({w})", lambda n: lambda q, k, v: local_attention(q, k, v, w)),
        Method(f"atrous({r})", lambda n: lambda q, k, v: atrous_attention(q, k, v, r)),
        Method(f"sparse({r})", lambda n: lambda q, k, v: sparse_attention(q, k, v, r)),
    ]


def pattern_pictures(cfg: Any, out_dir: Path) -> str:
    n, r = cfg.picture_n, 4
    panels = [("full", {}, False), ("atrous", {"rate": r}, False),
              ("local", {"window": r - 1}, False), ("sparse", {"rate": r}, False),
              ("strided", {"stride": r}, True), ("fixed", {"stride": r, "summary": 1}, True)]  # fmt: skip
    images = [
        (pattern_picture(k, n, causal=c, **p), pattern_title(k, causal=c, **p))
        for k, p, c in panels
    ]
    return mask_images(images, out_dir / "patterns.png",
                       suptitle="query i (row) attends key j (column); strided/fixed: blue = heads A1, orange = A2")  # fmt: skip


def equal_time_arm(
    cfg: Any,
    corpus: CharCorpus,
    res: Result,
    out_dir: Path,
    progress: bool,
    base: tuple[float, float],
) -> str:
    """The long-context, equal-time arm: runs, plots, metrics, table, comparison; a headline."""
    kw = {f.name: getattr(cfg, "long_" + f.name) for f in fields(BudgetSetup) if hasattr(cfg, "long_" + f.name)}  # fmt: skip
    setup = BudgetSetup(**kw, budget_s=cfg.time_budget_s, clock=cfg.clock)  # fmt: skip
    runs = equal_time_runs(
        corpus, cfg.long_patterns, cfg.long_seeds, setup, progress, out_dir / "equal_time"
    )
    n, budget, lines = (
        cfg.long_seq_len,
        f"{cfg.time_budget_s:g} s",
        dict(zip(("unigram", "bigram"), base)),
    )
    curve = {ax: {p: ([row[i] for row in r[0].curve], [row[2] for row in r[0].curve]) for p, r in runs.items()} for i, ax in enumerate(("time", "tokens"))}  # fmt: skip
    res.plot(line_panels([
        {"series": curve["time"], "title": f"n={n}, seed {cfg.long_seeds[0]}", "xlabel": f"training seconds ({cfg.clock} clock)", "ylabel": "valid bits per character", "hlines": lines},
        {"series": curve["tokens"], "title": "same runs", "xlabel": "training tokens seen", "ylabel": "valid bits per character", "hlines": lines},
    ], out_dir / "equal_time_bpc.png"), f"equal-time char LM at n={n}: valid bpc vs time and vs tokens")  # fmt: skip
    bpc = {p: [x.test_bpc for x in r] for p, r in runs.items()}
    tps = {p: mean_std([x.tokens_per_s for x in r])[0] for p, r in runs.items()}
    mib = {p: r[0].peak_mib for p, r in runs.items()}  # deterministic: seed 0's step
    res.plot(bar_panels([
        {"bars": tps, "title": "training speed", "ylabel": "tokens/s"},
        {"bars": mib, "title": "memory", "ylabel": "peak extra MiB, one training step"},
        {"bars": {p: mean_std(b) for p, b in bpc.items()}, "title": f"test bpc after {budget}", "ylabel": "bits per character"},
    ], out_dir / "equal_time_cost.png"), "equal-time arm: tokens/s, peak memory of a step, test bpc (mean ± std)")  # fmt: skip
    for p in runs:
        res.metric(f"long_test_bpc_{p}", mean_std(bpc[p])[0], f"test bpc at n={n} after {budget}, {p} (mean over seeds)")  # fmt: skip
        res.metric(f"long_tokens_per_s_{p}", tps[p], f"training tokens/s at n={n}, {p}")
        if mib[p] is not None:
            res.metric(f"long_peak_mib_{p}", mib[p], f"peak extra MiB of one training step, {p}")
    res.table(f"equal time: {cfg.long_layers} layers, d={cfg.long_dim}, h={cfg.long_heads}, n={n}, batch {cfg.long_batch_size}, {budget} ({cfg.clock} clock) per run; local w={cfg.long_window}, atrous/sparse r and strided/fixed l = {cfg.long_rate}",
              ["pattern", "test bpc", "steps", "train tokens/s", "peak MiB", "params"],
              [[p, pm(bpc[p], 3), mean_std([x.steps for x in r])[0], tps[p], mib[p], r[0].params] for p, r in runs.items()]
              + [[f"{k} (add-one)", f"{b:.3f}", None, None, None, None] for k, b in lines.items()])  # fmt: skip
    text = ", ".join(f"{p} {pm(b, 3)}" for p, b in bpc.items())
    if "full" in runs and len(runs) > 1:
        claims = {p: rank_claim(p, bpc[p], "full", bpc["full"], 3, lower_is_better=True) for p in runs if p != "full"}  # fmt: skip
        ok = [p for p, c in claims.items() if not c.startswith("full <")]
        lighter = [p for p in ok if None not in (mib[p], mib["full"]) and mib[p] < mib["full"]]
        res.compare("equal time, long context", article="sparse patterns save time and memory at nearly the same quality (no numbers)",
                    ours="; ".join(claims.values()) + " (test bpc). Tokens/s: " + ", ".join(f"{p} {t:.0f}" for p, t in tps.items()) + ". Peak MiB/step: " + ", ".join(f"{p} {m:.0f}" for p, m in mib.items() if m is not None),
                    note=f"n={n}, {budget} per run, test bpc {text}; a gap counts only if it exceeds the spread over >= 3 seeds",
                    verdict="holds" if lighter else "does not hold" if not ok else "partly")  # fmt: skip
        res.note(f"Equal-time arm: every run trains for {budget} of {cfg.clock}-clock time (evaluation excluded), so a cheaper pattern fits more steps. Patterns at least as good as full (lower bpc or within noise) while using less memory: {', '.join(lighter) or 'none'}.")  # fmt: skip
    if min(mean_std(b)[0] for b in bpc.values()) > base[1]:
        res.note(f"After {budget} every equal-time model is still above the add-one bigram's {base[1]:.3f} bpc: these are early-training comparisons, not converged models.")  # fmt: skip
    return f"At equal time ({budget}, n={n}) test bits/char: {text} (bigram {base[1]:.3f})."
