r"""The ``crf-memm`` experiment's side-by-side rows (jieba; a pretrained BERT at equal time), figures.

* **jieba** (the segmenter users pick today; its shipped dictionary, default mode with the HMM
  for unknown words) segments the same CWS test sentences, scored with the same SIGHAN word
  $F_1$ (:func:`kexue.tagging.cws_prf`): on the raw text (PKU/MSR: the official test gold; UD-GSD:
  its test split) and on the normalised text our taggers are trained and scored on.
* **BERT** (the article's encoder): the tiny Chinese BERT that :mod:`kexue.lm` pretrains for the
  ``mlm-mrc`` experiment (same cached config) + a dense layer + CRF / softmax head, a
  :class:`kexue.tagging.bert.BertTagger` fine-tuned by :func:`kexue.tagging.recipe.fit_tagger`
  until the wall time the char-CNN with the same head and seed took has passed (``max_seconds``);
  the gain is the paired difference $F_1^{\rm BERT}-F_1^{\rm CNN}$ per seed.

Kept out of :mod:`kexue.experiments.crf_memm` (with the figures) so that file stays thin.
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import fmean as _mean
from typing import Any

from kexue.report import Result, pm, rank_claim
from kexue.tagging.metrics import cws_prf
from kexue.tagging.recipe import evaluate, fit_tagger, new_bert_tagger

__all__ = ["bert_row", "jieba_scores", "draw_plots", "metric_key", "pretrained", "side_by_side"]


def metric_key(*parts: str) -> str:
    """``("f1", "pku-cws", "crf")`` -> ``"f1_pku_cws_crf"``."""
    return "_".join(p.replace("-", "_") for p in parts)


def jieba_scores(name: str, max_test: int = 0) -> dict[str, float] | None:
    """jieba on a CWS set's first ``max_test`` test sentences (0: all), SIGHAN word F1 (0-1).

    Returns:
        ``{"f1": on the raw text, "f1_norm": on the normalised text, "chars_per_s": raw text}``,
        or ``None`` when jieba is not installed.
    """
    try:
        import jieba
    except ImportError:
        return None
    from kexue import data

    jieba.setLogLevel(60)  # no "Building prefix dict" chatter
    jieba.initialize()  # loads the dictionary once, outside the timing
    out: dict[str, float] = {}
    for key, split in (("f1", "gold" if name != "ud-gsd-cws" else "test"), ("f1_norm", "test")):
        gold = [[w for w in s if w] for s in data.load(name, split)]
        gold = gold[:max_test] if max_test else gold
        t0 = time.perf_counter()
        pred = [list(jieba.cut("".join(g))) for g in gold]
        out[f"speed_{key}"] = sum(len("".join(g)) for g in gold) / (time.perf_counter() - t0)
        out[key] = cws_prf(gold, pred)["f1"]
    return {"f1": out["f1"], "f1_norm": out["f1_norm"], "chars_per_s": out["speed_f1"]}


def pretrained(preset: str, progress: bool) -> tuple[Path, dict[str, Any], Any]:
    """``(directory, pretraining summary, PretrainConfig)`` of ``mlm-mrc``'s ``preset`` BERT,
    pretrained now unless cached under ``$KEXUE_CACHE/lm``."""
    from kexue.experiments.mlm_mrc import PRESETS as LM_PRESETS
    from kexue.experiments.mlm_mrc import bert_dir

    cfg = LM_PRESETS[preset]
    return (*bert_dir(cfg, progress), cfg)


def bert_row(path: Path, train: list, test: list, task: str, head: str, *, seed: int,
             seconds: float, fit_kwargs: dict[str, Any], dropout: float) -> dict[str, Any]:  # fmt: skip
    """Fine-tune the BERT in ``path`` + ``head`` for ``seconds`` of wall time and score it.

    Returns:
        ``{"f1", "train_seconds", "steps"}`` (``f1`` on ``test``, 0-1).
    """
    from kexue.core.seed import seed_everything

    seed_everything(seed, deterministic=False)  # before the dense layer and head are built
    tagger = new_bert_tagger(train, task, path, head=head, dropout=dropout)
    hist = fit_tagger(tagger, train, epochs=1000, seed=seed, progress=False, max_seconds=seconds,
                      **fit_kwargs)  # fmt: skip
    f1 = evaluate(tagger, test, task)["f1"]
    return {"f1": f1, "train_seconds": hist["train_seconds"], "steps": hist["steps"]}


def side_by_side(res: Result, runs: dict, bert: dict, peers: dict, lm: Any, cfg: Any,
                 names: dict[str, str]) -> None:  # fmt: skip
    """Add the jieba table and the BERT-vs-CNN table, comparison and notes to ``res``."""
    _jieba_table(res, runs, peers, cfg, names)
    brows, claims = [], []
    for (d, h), rs in bert.items():
        b, c = [100 * r["f1"] for r in rs], [100 * r["f1"] for r in runs[(d, h)]]
        gain = [x - y for x, y in zip(b, c)]
        res.metric(metric_key("f1_bert", d, h), round(_mean(b) / 100, 5),
                   f"{d} BERT + {names[h]}: test F1 at the CNN's training time")  # fmt: skip
        res.metric(metric_key("gain_bert", d, h), round(_mean(gain), 3),
                   f"{d} {names[h]}: BERT − CNN test F1 points, same seed and time")  # fmt: skip
        claims.append(f"{d} {names[h]}: " + rank_claim("BERT", b, "CNN", c))
        brows.append([d, names[h], pm(b), pm(c), pm(gain),
                      round(_mean([r["train_seconds"] for r in rs]), 1),
                      round(_mean([r["train_seconds"] for r in runs[(d, h)]]), 1),
                      round(_mean([r["steps"] for r in rs]))])  # fmt: skip
    if not brows:
        return
    _, summary, pc = lm
    gains = [res.metrics[metric_key("gain_bert", d, h)] for d, h in bert]
    res.headline += f" BERT at the CNN's training time: {_mean(gains):+.2f} F1 points (mean)."
    res.table(f"BERT vs char-CNN at equal training time (test F1 %, {len(cfg.seeds)} seed(s))",
              ["dataset", "head", "BERT", "CNN", "BERT − CNN (paired)", "BERT train s",
               "CNN train s", "BERT steps"], brows)  # fmt: skip
    res.compare("BERT vs char-CNN encoder, same head, seed and training time (test F1 %)",
                article="the article fine-tunes a pretrained BERT-base (~96% PKU F1)",
                ours=" | ".join(claims), note="issue 14: the gain over the CNN at equal time")  # fmt: skip
    which = (
        f"the shipped {pc.bert}"
        if pc.bert
        else f"the tiny BERT kexue.lm pretrains for mlm-mrc's '{cfg.bert}' preset "
        f"({pc.lm_hidden} hidden, {pc.lm_layers} layers, {pc.lm_steps} MLM steps)"
    )
    res.note(
        f"BERT rows: {which}, pretrained on chinese-text, held-out MLM accuracy "
        f"{summary['eval']['mlm_accuracy']:.3f} (pretraining not counted) + dense + head, fine-tuned with Adam lr {cfg.bert_lr} (one lr for BERT and "
        "head) until the CNN's training time with the same head and seed had passed; the "
        "paired gain is per seed. Decoding uses windows of all 512 BERT positions."
    )


def _jieba_table(res: Result, runs: dict, peers: dict, cfg: Any, names: dict[str, str]) -> None:
    rows = []
    for d, p in peers.items():
        if p is None:
            res.note(f"{d}: jieba is not installed (pip install jieba): no jieba row")
            continue
        best = max(cfg.heads, key=lambda h: _mean([r["f1"] for r in runs[(d, h)]]))
        ours = [100 * r["f1"] for r in runs[(d, best)]]
        res.metric(metric_key("f1_jieba", d), round(p["f1"], 5), f"{d}: jieba word F1, raw text")
        res.metric(metric_key("f1_jieba_norm", d), round(p["f1_norm"], 5),
                   f"{d}: jieba word F1, normalised text")  # fmt: skip
        rows.append([d, round(100 * p["f1"], 2), round(100 * p["f1_norm"], 2),
                     round(p["chars_per_s"]), f"{names[best]} {pm(ours)}",
                     round(_mean([r["train_seconds"] for r in runs[(d, best)]]), 1),
                     round(_mean(ours) - 100 * max(p["f1"], p["f1_norm"]), 2)])  # fmt: skip
    if rows:
        res.headline += " jieba (raw text): " + ", ".join(f"{r[0]} {r[1]:.2f}" for r in rows) + "."
        res.table("jieba vs ours: same test sentences, same SIGHAN scorer (word F1 %)",
                  ["dataset", "jieba, raw text", "jieba, normalised text", "jieba chars / s",
                   "ours (best CNN head)", "ours train s / run", "ours − better jieba"], rows)  # fmt: skip
        res.note(
            "jieba: default mode (HMM on, its shipped dictionary), on the raw test text (PKU/MSR: "
            "the official gold split) and on the normalised text ours is trained and scored on "
            "(digits -> 0, Latin -> X, long words -> L, one symbol each; UD-GSD: punctuation "
            "only); 'ours − better jieba' subtracts the higher of the two."
        )


def draw_plots(res: Result, f1: dict, runs: dict, cfg: Any, out_dir: Path,
               names: dict[str, str], order: tuple[str, ...]) -> None:  # fmt: skip
    """Write and register ``f1.png`` (test F1 and its gain over the untrained tagger per head)
    and ``train_time.png`` (s / epoch per head); ``order`` fixes each head's colour."""
    from kexue.report import plots

    ds, heads = list(cfg.datasets), list(cfg.heads)
    base = {dh: _mean([100 * r["f1_untrained"] for r in rows]) for dh, rows in runs.items()}
    secs = {dh: _mean([r["sec_per_epoch"] for r in rows]) for dh, rows in runs.items()}

    def bars(ax: Any, value: Any, ylabel: str) -> None:
        width = 0.8 / max(len(heads), 1)
        for j, h in enumerate(heads):
            xs = [i + (j - (len(heads) - 1) / 2) * width for i in range(len(ds))]
            ax.bar(xs, [value(d, h) for d in ds], width, label=names[h], color=f"C{order.index(h)}")
        ax.set_xticks(range(len(ds)))
        ax.set_xticklabels(ds)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    fig, axes = plots.figure(1, 2, width=max(4.5, 1.4 * len(ds)), height=3.6)
    bars(axes[0][0], lambda d, h: _mean(f1[(d, h)]), "test F1 (%)")
    bars(axes[0][1], lambda d, h: _mean(f1[(d, h)]) - base[(d, h)], "F1 − untrained")
    res.plot(plots.save(fig, out_dir / "f1.png"), "Test F1 per head (CWS: SIGHAN word F1; NER: "
             "strict entity F1; seed mean) and its gain over the tagger before training.")  # fmt: skip
    fig, axes = plots.figure(width=max(5.0, 1.6 * len(ds)), height=3.6)
    bars(axes[0][0], lambda d, h: secs[(d, h)], "seconds / epoch")
    res.plot(plots.save(fig, out_dir / "train_time.png"),
             "Training wall time per epoch, encoder included (shared CPU: noisy).")  # fmt: skip
