r"""Experiment ``batchnorm``: does BatchNorm smooth the loss landscape?

Su Jianlin, 《BN究竟起了什么作用？一个闭门造车的分析》 (2019-10-11): by the descent lemma a gradient
step decreases the loss when :math:`\eta < 2/L` (:math:`L` = Lipschitz constant of the
gradient); centring and scaling layer inputs lowers a bound on :math:`L`, so BN should allow
larger learning rates. Santurkar et al. (NeurIPS 2018) measure this along the training
trajectory (loss range, gradient predictiveness, effective :math:`\beta`-smoothness, their
Fig. 4); PyHessian (Yao et al. 2020) measures curvature (top Hessian eigenvalue) and finds BN
"does not necessarily" smooth the landscape, especially for shallow networks.

Here: the same VGG-style CNN with and without BN (:func:`kexue.analysis.recipe.vgg_cnn`) on
MNIST, plain SGD at ``lrs``, probed every ``probe_every`` steps in train mode (BN with batch
statistics) plus the top eigenvalue in eval mode (running statistics, PyHessian's mode), and a
short learning-rate sweep for the largest rate that still trains.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexue.analysis.recipe import (
    ProbeConfig,
    lr_sweep,
    mnist_tensors,
    summarize,
    train_with_probes,
)
from kexue.core.checks import check_config_int
from kexue.core.threads import num_threads
from kexue.report.plots import figure, save
from kexue.report.result import Result, mean_std

NETS = (("plain", False), ("bn", True))
ARTICLE = {
    "beta": "lower with BN (Santurkar Fig. 4c; Su: centring/scaling lowers the bound on L)",
    "grad": "smaller gradient change with BN (Santurkar Fig. 4b)",
    "range": "narrower loss range with BN (Santurkar Fig. 4a)",
    "lr": "BN trains at larger learning rates (Su: eta < 2/L with smaller L; Santurkar)",
    "eig": "PyHessian: BN does not necessarily lower the top eigenvalue (shallow nets)",
}


@dataclass(frozen=True)
class Config:
    """Every knob; full preset measured once at 1721 s (one thread, niced), quick ~3-5 min."""

    seeds: tuple[int, ...] = (0, 1, 2)
    lrs: tuple[float, ...] = (0.02, 0.1, 0.3)
    steps: int = 1500
    batch_size: int = 64
    n_train: int = 60_000
    n_test: int = 10_000
    widths: tuple[int, ...] = (8, 16)
    momentum: float = 0.0
    log_every: int = 10
    probe_every: int = 150
    probe_batch: int = 256
    multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    eig_iters: int = 20
    eig_tol: float = 1e-3
    sweep_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
    sweep_steps: int = 300
    trains_acc: float = 0.5  # "trains": test accuracy after the sweep's steps >= this (chance 0.1)
    threads: int = 1

    def __post_init__(self) -> None:
        mins = {"steps": 1, "batch_size": 2, "n_train": 2, "n_test": 1, "log_every": 1,
                "probe_every": 1, "probe_batch": 2, "eig_iters": 1, "sweep_steps": 1, "threads": 0}  # fmt: skip
        for name, lo in mins.items():
            check_config_int(getattr(self, name), f"Config.{name}", lo)
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ValueError(f"Config.seeds must be a non-empty tuple of ints, got {self.seeds!r}")
        for name in ("lrs", "sweep_lrs", "multipliers"):
            v = getattr(self, name)
            if not v or not all(isinstance(x, int | float) and 0 < x < math.inf for x in v):
                raise ValueError(
                    f"Config.{name} must be a non-empty tuple of numbers > 0, got {v!r}"
                )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"Config.momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.trains_acc <= 1:
            raise ValueError(f"Config.trains_acc must be in (0, 1], got {self.trains_acc!r}")
        if not self.widths or len(self.widths) > 4:
            raise ValueError(f"Config.widths must have 1 to 4 stages, got {self.widths!r}")
        if not 0 <= self.eig_tol < math.inf:
            raise ValueError(f"Config.eig_tol must be a finite number >= 0, got {self.eig_tol!r}")


# fmt: off
PRESETS = {
    "smoke": Config(
        seeds=(0,), lrs=(0.1,), steps=24, batch_size=32, n_train=768, n_test=256, widths=(4, 8),
        log_every=4, probe_every=12, probe_batch=32, eig_iters=3, sweep_lrs=(0.1,), sweep_steps=8,
    ),
    "quick": Config(  # a few minutes on 2 idle cores (estimate; see the README for a measured run)
        seeds=(0, 1, 2), lrs=(0.02, 0.1), steps=300, n_train=12_000, n_test=2_000, probe_every=75,
        probe_batch=128, eig_iters=10, sweep_lrs=(0.03, 0.1, 0.15, 0.2, 0.3), sweep_steps=100,
    ),
    "full": Config(),  # 3 seeds x 3 lrs x 2 nets x 1500 steps + sweep: 1721 s measured once
}
# fmt: on


def _verdict(ratios: list[float], label: str = "plain/BN") -> tuple[str, str]:
    """Seed-aware verdict on "ratio > 1" from per-seed ratios; returns (verdict, text)."""
    if not ratios or any(not math.isfinite(r) or r <= 0 for r in ratios):
        return "not comparable", "n/a"
    logs = [math.log(r) for r in ratios]
    m, s = mean_std(logs)
    text = f"{label} = {math.exp(m):.2f}x (geo. mean, n={len(ratios)}; per seed " + ", ".join(
        f"{r:.2f}" for r in ratios
    ) + ")"  # fmt: skip
    if len(ratios) >= 3:
        # the verdict rule of kexue.report.stats: paired t-test over seeds (here log ratio
        # against 0), two-sided p < 0.05
        from kexue.report.stats import ALPHA, paired_t_test

        _, p = paired_t_test(logs, [0.0] * len(logs))
        text += f", paired t-test p = {p:.3f}"
        if p < ALPHA:
            return ("holds" if m > 0 else "does not hold"), text
    return "within noise", text


def run(cfg: Config, out_dir: Path, progress: bool = True) -> Result:
    """Train the grid, sweep the learning rate, draw the plots and return the Result."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    probe = ProbeConfig(
        every=cfg.probe_every, multipliers=cfg.multipliers, batch_size=cfg.probe_batch,
        eig_iters=cfg.eig_iters, eig_tol=cfg.eig_tol,
    )  # fmt: skip
    common = {"batch_size": cfg.batch_size, "widths": cfg.widths, "momentum": cfg.momentum}
    with num_threads(cfg.threads):
        train, test = mnist_tensors("train", cfg.n_train), mnist_tensors("test", cfg.n_test)
        runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for lr, (name, bn), seed in ((lr, n, s) for lr in cfg.lrs for n in NETS for s in cfg.seeds):
            say(f"batchnorm: {name} lr={lr:g} seed={seed}")
            runs.setdefault((name, lr), []).append(train_with_probes(
                batchnorm=bn, lr=lr, seed=seed, steps=cfg.steps, train=train, test=test,
                probe=probe, log_every=cfg.log_every,
                out_dir=out_dir / "runs" / f"{name}_lr{lr:g}_seed{seed}", **common,
            ))  # fmt: skip
        sweep: dict[str, dict[int, dict[float, float]]] = {}
        for (name, bn), seed in ((n, s) for n in NETS for s in cfg.seeds):
            say(f"batchnorm: learning-rate sweep, {name} seed={seed}")
            sweep.setdefault(name, {})[seed] = lr_sweep(
                batchnorm=bn, lrs=cfg.sweep_lrs, seed=seed, steps=cfg.sweep_steps, train=train,
                test=test, out_dir=out_dir / "sweep" / f"{name}_seed{seed}", **common,
            )  # fmt: skip
    return _report(cfg, out_dir, runs, sweep)


# fmt: off
def _report(cfg: Config, out_dir: Path, runs: dict, sweep: dict) -> Result:
    trained = {k: all(r["final_acc"] >= cfg.trains_acc for r in v) for k, v in runs.items()}
    both = [lr for lr in cfg.lrs if trained[("plain", lr)] and trained[("bn", lr)]]
    max_lr = {n: [max((lr for lr, a in sweep[n][s].items() if a >= cfg.trains_acc), default=math.nan)
                  for s in cfg.seeds] for n, _ in NETS}  # per seed
    sweep_acc = {n: {lr: statistics.fmean(sweep[n][s][lr] for s in cfg.seeds) for lr in cfg.sweep_lrs}
                 for n, _ in NETS}  # mean over seeds (NaN if any seed diverged)
    rows, per, res = [], {}, Result(headline="")
    for (name, lr), rs in runs.items():
        per[(name, lr)] = st = {k: [summarize(r)[k] for r in rs] for k in summarize(rs[0])}
        rows.append([name, lr, trained[(name, lr)]] + [statistics.fmean(v) for v in st.values()])
        key = f"{name}_lr{lr:g}".replace(".", "p").replace("-", "m")
        for k, v in st.items():
            res.metric(f"{k}_{key}", statistics.fmean(v), f"{k} ({name}, lr {lr:g}, mean over seeds)")
    for n, _ in NETS:
        res.metric(f"max_lr_{n}", statistics.median(max_lr[n]),
                   f"largest sweep lr reaching acc >= {cfg.trains_acc} (median over seeds)")

    def ratios(key: str, lr: float) -> list[float]:
        return [p / b for p, b in zip(per[("plain", lr)][key], per[("bn", lr)][key], strict=True)]

    verdicts, beta_txt = [], []
    for key, label in (("beta", "effective β-smoothness"), ("grad", "gradient change (predictiveness)"),
                       ("range", "loss-range width")):
        for lr in both:
            verdict, text = _verdict(ratios(key, lr))
            verdicts.append(verdict)
            if key == "beta":
                beta_txt.append(f"lr {lr:g}: {text}, {verdict or 'no verdict'}")
            res.compare(f"{label}, median over training, lr {lr:g}", article=ARTICLE[key], ours=text,
                        verdict=verdict, note="train-mode probe on a fixed batch; >1: BN smoother")
    lr_txt = {n: "/".join("none" if math.isnan(v) else f"{v:g}" for v in max_lr[n]) for n, _ in NETS}
    lr_verdict, lr_ratio = _verdict([b / p for b, p in zip(max_lr["bn"], max_lr["plain"])], "BN/plain")
    verdicts.append(lr_verdict)
    res.compare("largest learning rate that trains (sweep grid, per seed)", article=ARTICLE["lr"],
                ours=f"BN {lr_txt['bn']}, plain {lr_txt['plain']}: {lr_ratio}", verdict=lr_verdict,
                note=f"{cfg.sweep_steps} SGD steps per sweep run, 'trains' = test acc >= "
                f"{cfg.trains_acc}; resolution limited by the grid {cfg.sweep_lrs}")
    eig_eval = []
    for lr in both:
        t_train, t_eval = _verdict(ratios("eig", lr))[1], _verdict(ratios("eig_eval", lr))[1]
        eig_eval.append(statistics.fmean(ratios("eig_eval", lr)))
        res.compare(f"top Hessian eigenvalue, lr {lr:g}", article=ARTICLE["eig"],
                    ours=f"train mode: {t_train}; eval mode: {t_eval}",
                    note="power iteration; eval mode = running-statistics BN as in PyHessian")
    res.table("Per network and learning rate (means over seeds; medians over training checkpoints)",
              ["net", "lr", "trains", "test acc", "β (eff.)", "grad change", "loss-range width",
               "λ_max train", "λ_max eval"], rows)
    res.table(f"Learning-rate sweep: test accuracy after {cfg.sweep_steps} steps, mean over seeds",
              ["lr", "plain", "bn"], [[lr, sweep_acc["plain"][lr], sweep_acc["bn"][lr]] for lr in cfg.sweep_lrs])
    _plots(cfg, out_dir, runs, sweep_acc, res)
    n_hold, n_not = verdicts.count("holds"), verdicts.count("does not hold")
    support = ("support" if n_hold and not n_not else "contradict" if n_not and not n_hold
               else "neither clearly support nor contradict")
    res.headline = (
        f"Our measurements {support} the article ({n_hold} holds, {n_not} does not hold, "
        f"{verdicts.count('within noise')} within noise, {len(cfg.seeds)} seed(s)); effective β "
        f"plain/BN: {'; '.join(beta_txt) or 'no learning rate where both networks trained'}; "
        f"largest sweep lr that trains (per seed): BN {lr_txt['bn']}, plain {lr_txt['plain']}.")
    if eig_eval:
        eig_train = [statistics.fmean(ratios("eig", lr)) for lr in both]
        fmt = lambda rs: ", ".join(f"{r:.2f}" for r in rs)  # noqa: E731
        agree = "agrees" if min(eig_eval) <= 1 else "disagrees"
        res.note(f"Curvature (mean plain/BN λ_max at lr {', '.join(f'{lr:g}' for lr in both)}): "
                 f"eval mode (PyHessian's running-statistics BN) {fmt(eig_eval)}, train mode (batch "
                 f"statistics, the function SGD descends) {fmt(eig_train)}. In eval mode this "
                 f"{agree} with PyHessian's finding that BN does not necessarily lower the top "
                 "eigenvalue (agree = BN's is not lower at some shared lr); the two BN modes are "
                 "different functions, so which curvature one reports depends on the mode.")
    res.note(
        "Probe protocol: fixed probe batch per seed, model in train mode (BN batch statistics, "
        f"running statistics untouched), step sizes lr × {cfg.multipliers}, plain SGD "
        f"(momentum {cfg.momentum}) so -g is the training direction; top eigenvalue by "
        f"{cfg.eig_iters} power-iteration steps (tol {cfg.eig_tol}), also in eval mode."
    )
    res.note(
        "Verdicts follow the seed rule: a ratio 'holds' only with >= 3 seeds and a mean log-gap "
        f"larger than its spread; this run has {len(cfg.seeds)} seed(s). Learning rates where a "
        "network did not train are excluded from the comparisons (a collapsed, flat network "
        "looks 'smooth'). Checkpoints are matched by step, not by loss: the plain network's "
        "early plateau is flat (small probes) and its later descent rough, and the medians mix "
        "both phases; see landscape.png for the trajectories."
    )
    return res
# fmt: on


def _plots(cfg: Config, out_dir: Path, runs: dict, sweep: dict, res: Result) -> None:
    colors = {"plain": "tab:red", "bn": "tab:blue"}
    n = len(cfg.lrs)
    fig, ax = figure(1, n, width=4.5, height=3.2)
    for j, lr in enumerate(cfg.lrs):
        for name, _ in NETS:
            for r in runs[(name, lr)]:
                s, loss = zip(*r["train"]) if r["train"] else ((), ())
                ax[0, j].plot(
                    s, loss, color=colors[name], alpha=0.8, label=f"{name} seed {r['seed']}"
                )
        ax[0, j].set(title=f"train loss, lr {lr:g}", xlabel="step", yscale="log")
        ax[0, j].legend(fontsize=7)
    res.plot(save(fig, out_dir / "curves.png"), "Training loss (log scale) with and without BN.")
    fig, ax = figure(4, n, width=4.5, height=3.0)
    keys = ("probe_loss", "probe_grad_change_max", "probe_beta", "lambda_max_train")
    titles = (
        "loss range over step sizes",
        "max gradient change",
        "effective β",
        "λ_max: train o, eval x",
    )
    for j, lr in enumerate(cfg.lrs):
        for name, _ in NETS:
            for r in runs[(name, lr)]:
                ev = r["evals"]
                s = [e["step"] for e in ev]
                ax[0, j].fill_between(s, [e["probe_loss_min"] for e in ev],
                                      [e["probe_loss_max"] for e in ev], color=colors[name],
                                      alpha=0.3, label=name if r["seed"] == cfg.seeds[0] else None)  # fmt: skip
                for i, k in enumerate(keys[1:], start=1):
                    ax[i, j].plot(s, [e[k] for e in ev], "o-", color=colors[name], ms=3)
                ax[3, j].plot(
                    s, [e["lambda_max_eval"] for e in ev], "x--", color=colors[name], ms=3
                )
        for i, t in enumerate(titles):
            ax[i, j].set(title=f"{t}, lr {lr:g}", xlabel="step")
        for i in (1, 2, 3):
            ax[i, j].set_yscale("log")
        ax[0, j].legend(fontsize=7)
    res.plot(save(fig, out_dir / "landscape.png"),
             "Santurkar Fig. 4 style: loss band, gradient change and effective β along the "
             "gradient at each checkpoint; bottom: λ_max in train mode (o) and eval mode (x).")  # fmt: skip
    fig, ax = figure(1, 1, width=5, height=3.2)
    for name, _ in NETS:
        ax[0, 0].plot(list(sweep[name]), [0 if math.isnan(a) else a for a in sweep[name].values()],
                      "o-", color=colors[name], label=name)  # fmt: skip
    ax[0, 0].axhline(cfg.trains_acc, color="grey", ls=":")
    ax[0, 0].set(xscale="log", xlabel="learning rate", ylabel="test accuracy",
                 title=f"after {cfg.sweep_steps} SGD steps (0 = diverged)")  # fmt: skip
    ax[0, 0].legend()
    res.plot(
        save(fig, out_dir / "lr_sweep.png"), "Learning-rate sweep; dotted: 'trains' threshold."
    )
