r"""Experiment ``crf-memm``: softmax vs CRF vs MEMM vs Bi-MEMM heads on the same encoder.

Su Jianlin, 《CRF用过了，不妨再了解下更快的MEMM？》 (kexue.fm, 2020-02-24). A CRF normalises
$e^{s(y)}$ over all $k^t$ tag paths; an MEMM normalises each step,
$P(y\mid x)=\prod_s \operatorname{softmax}_{y_s}\big(g(y_{s-1},\cdot)+f_s\big)$, so its loss has no
sequential recursion; the Bi-MEMM averages the left-to-right and right-to-left MEMM losses.
Claims: Bi-MEMM > MEMM > softmax; CRF basically never worse than Bi-MEMM (weak encoder: CRF
better by ~0.5%); Bi-MEMM trains faster than CRF; prediction speed is the same.

Tasks: Chinese word segmentation (BMES; UD Chinese GSD, SIGHAN 2005 PKU and MSR, normalised) scored
with SIGHAN-style word F1, and NER (``msra-ner``, BIO PER/LOC/ORG) scored with strict entity F1.
Same character CNN encoder for every head, trained once per seed in ``seeds``; rankings only
through :func:`kexue.report.rank_claim` (>= 3 seeds and a gap larger than the spread). Side by
side: ``jieba`` (shipped dictionary, default mode) on the same CWS test sentences and scorer, and
the article's setting, a BERT (the tiny one ``mlm-mrc`` pretrains here, cached) + CRF / softmax
fine-tuned for the same wall time as the CNN with that head and seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from statistics import fmean as _mean

from kexue.core.threads import num_threads
from kexue.core.timing import ratio_text
from kexue.experiments.crf_memm_side import (
    bert_row,
    draw_plots,
    jieba_scores,
    pretrained,
    side_by_side,
)
from kexue.experiments.crf_memm_side import metric_key as _key
from kexue.report import Result, mean_std, pm, rank_claim
from kexue.tagging.recipe import cws_examples, head_loss_ms, ner_examples, train_and_score

HEADS = ("softmax", "crf", "memm", "bimemm")
HEAD_NAMES = {"softmax": "softmax", "crf": "CRF", "memm": "MEMM", "bimemm": "Bi-MEMM"}
TASK = {"ud-gsd-cws": "cws", "pku-cws": "cws", "msr-cws": "cws", "msra-ner": "ner"}
ENCODERS = ("cnn", "bilstm")
REDUCTIONS = ("mean", "sum", "token_mean")
ARTICLE = {  # the MEMM article's statements and the CRF baselines of Su's example scripts
    "ranking": "Bi-MEMM > MEMM > softmax, always",
    "crf": "CRF basically never worse than Bi-MEMM; weak encoder: CRF better by ~0.5% absolute",
    "speed": "Bi-MEMM 25% faster than CRF with 12-layer BERT; '快1.5倍' with a 2-layer BERT",
    "predict": "same for MEMM and CRF (same Viterbi)",
    "pku-cws": "≈ 96.1% (CRF, BERT-base)",
    "msra-ner": "95.35% (People's Daily test, CRF, BERT-base)",
}


@dataclass(frozen=True)
class Config:
    """Every knob of the experiment (``max_*`` = 0: whole split; ``bert``: the ``mlm-mrc``
    preset whose cached pretraining gives the BERT rows, ``""``: no BERT rows)."""

    datasets: tuple[str, ...] = ("ud-gsd-cws", "pku-cws", "msr-cws", "msra-ner")
    heads: tuple[str, ...] = HEADS
    encoder: str = "cnn"  # Su's 2018 demo: 3 x Conv1D(3); or "bilstm"
    embed_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 3
    dropout: float = 0.1
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-3
    trans_lr_mult: float = 1.0
    reduction: str = "token_mean"  # same reduction for all heads (bert4keras MEMM uses it)
    max_len: int = 100  # training sentences are cut (at word boundaries for CWS) to this length
    max_train: int = 0  # first N training sentences of each set
    ner_max_train: int = 0  # first N msra-ner training sentences (0: as max_train)
    max_test: int = 0  # first N test sentences
    min_freq: int = 1
    seeds: tuple[int, ...] = (0,)  # one full training per seed; rank claims need >= 3
    threads: int = 1  # small matmuls: one intra-op thread is steadier on a shared CPU
    jieba: bool = True  # score jieba on the CWS sets (skipped with a note if not installed)
    bert: str = ""  # "smoke" / "quick" / "full": mlm-mrc's pretraining config of that preset
    bert_heads: tuple[str, ...] = ("crf", "softmax")  # each must be in heads (equal time)
    bert_datasets: tuple[str, ...] = ()  # () = all of datasets
    bert_lr: float = 1e-3  # Adam, BERT and dense layer alike (fit_tagger has one lr)

    def __post_init__(self) -> None:
        choices = {"datasets": tuple(TASK), "heads": HEADS, "encoder": ENCODERS,
                   "reduction": REDUCTIONS, "bert": ("", *SCALES), "seeds": "ints >= 0",
                   "bert_heads": self.heads if self.bert else HEADS,
                   "bert_datasets": self.datasets}  # fmt: skip
        for f in fields(self):
            v, name, what = getattr(self, f.name), f.name, choices.get(f.name)
            num = isinstance(v, int | float) and not isinstance(v, bool)
            if str(f.type).startswith("tuple"):
                ok = isinstance(v, tuple) and (bool(v) or name.startswith("bert")) and all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0
                    if name == "seeds" else x in what for x in v
                ) and len(set(v)) == len(v)  # fmt: skip
            elif what is not None:
                ok = v in what
            elif isinstance(f.default, bool):
                what, ok = "a bool", isinstance(v, bool)
            elif isinstance(f.default, float):
                what = "a number in [0, 1)" if name == "dropout" else "a number > 0"
                ok = num and (0 <= v < 1 if name == "dropout" else v > 0)
            else:
                low = 0 if name in ("max_train", "ner_max_train", "max_test", "threads") else 1
                what, ok = f"an int >= {low}", num and isinstance(v, int) and v >= low
            if not ok:
                raise ValueError(f"Config.{name} must be {what} (tuples: distinct), got {v!r}")


SCALES = ("smoke", "quick", "full")
# fmt: off
PRESETS = {
    "smoke": Config(datasets=("ud-gsd-cws", "msra-ner"), embed_dim=32, hidden_dim=32,
                    num_layers=2, epochs=1, max_len=40, max_train=48, max_test=24, batch_size=16,
                    bert_datasets=("ud-gsd-cws",)),  # BERT rows: bert=smoke (pretrains, caches)
    # quick: whole test sets, three seeds so that rankings can be told from seed noise; NER
    # needs more training sentences than CWS (entities are sparse). BERT rows on two CWS sets
    # (BERT decoding of all four test sets would double the run time on a CPU).
    "quick": Config(embed_dim=64, hidden_dim=64, epochs=4, lr=1e-2, max_len=64, max_train=1500,
                    ner_max_train=12000, seeds=(0, 1, 2), bert="quick",
                    bert_datasets=("ud-gsd-cws", "pku-cws"), bert_lr=3e-3),  # lr: best of 4 probed
    "full": Config(seeds=(0, 1, 2), bert="full"),  # whole sets, 3 seeds: many hours on 2 cores
}
# fmt: on


def _n_train(cfg: Config, name: str) -> int:
    return (cfg.ner_max_train or cfg.max_train) if TASK[name] == "ner" else cfg.max_train


def _data(name: str, cfg: Config) -> tuple[list, list, str]:
    from kexue import data

    train, test = data.load(name, "train"), data.load(name, "test")
    train = train[: _n_train(cfg, name)] if _n_train(cfg, name) else train
    test = test[: cfg.max_test] if cfg.max_test else test
    make = cws_examples if TASK[name] == "cws" else ner_examples
    return make(train, cfg.max_len), make(test), TASK[name]


def run(cfg: Config, out_dir: Path, progress: bool = True) -> Result:
    """Train every head on every dataset for every seed (then jieba, the BERT rows)."""
    out_dir, runs, bert_runs, peers, sizes, head_ms = Path(out_dir), {}, {}, {}, {}, {}
    ds = cfg.datasets
    tagger_kw = dict(encoder=cfg.encoder, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim,
                     num_layers=cfg.num_layers, dropout=cfg.dropout)  # fmt: skip
    fit_kw = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                  trans_lr_mult=cfg.trans_lr_mult, reduction=cfg.reduction)  # fmt: skip
    bert_kw = dict(batch_size=cfg.batch_size, lr=cfg.bert_lr, reduction=cfg.reduction)
    with num_threads(cfg.threads):
        lm = pretrained(cfg.bert, progress) if cfg.bert else None
        for name in ds:
            train, test, task = _data(name, cfg)
            sizes[name] = (len(train), len(test))
            lengths, k = [len(c) for c, _ in train[: cfg.batch_size]], 4 if task == "cws" else 7
            head_ms[name] = head_loss_ms(lengths, k, cfg.heads, reduction=cfg.reduction)
            for head in cfg.heads:
                for seed in cfg.seeds:
                    row = train_and_score(train, test, task, head, seed=seed,
                                          min_freq=cfg.min_freq, tagger_kwargs=tagger_kw,
                                          fit_kwargs=fit_kw, progress=progress)  # fmt: skip
                    row["train_seconds"] = row["sec_per_epoch"] * cfg.epochs
                    runs.setdefault((name, head), []).append(row)
                    if progress:
                        print(f"[crf-memm] {name} {head} seed {seed}: F1 {row['f1']:.4f}")
            if task == "cws" and cfg.jieba:
                peers[name] = jieba_scores(name, cfg.max_test)
            for head in cfg.bert_heads if lm and name in (cfg.bert_datasets or ds) else ():
                bert_runs[(name, head)] = [
                    bert_row(lm[0], train, test, task, head, seed=s, dropout=cfg.dropout,
                             seconds=cnn["train_seconds"], fit_kwargs=bert_kw)
                    for s, cnn in zip(cfg.seeds, runs[(name, head)])
                ]  # fmt: skip
    res = _result(runs, cfg, sizes, head_ms, out_dir)
    side_by_side(res, runs, bert_runs, peers, lm, cfg, HEAD_NAMES)
    return res


METRICS = (  # (row key, digits, label)
    ("f1", 5, "test F1, mean over seeds"),
    ("sec_per_epoch", 3, "training s / epoch"),
    ("train_seconds", 2, "training s per run"),
    ("chars_per_s", 1, "decode chars / s"),
    ("f1_crf_viterbi", 5, "test F1 with Su's CRF-style Viterbi decode"),
    ("f1_untrained", 5, "test F1 of the same tagger before training"),
)


def _result(runs: dict, cfg: Config, sizes: dict, head_ms: dict, out_dir: Path) -> Result:
    res = Result(headline="")
    ds, heads, n = list(cfg.datasets), list(cfg.heads), len(cfg.seeds)
    f1 = {dh: [100 * r["f1"] for r in rows] for dh, rows in runs.items()}  # percent, per seed
    for (d, h), rows in runs.items():
        for key, digits, label in METRICS:
            if key in rows[0]:
                value = round(_mean([r[key] for r in rows]), digits)
                res.metric(_key(key, d, h), value, f"{d} {HEAD_NAMES[h]}: {label}")
        if n > 1:
            std = round(mean_std([r["f1"] for r in rows])[1], 5)
            res.metric(_key("f1", d, h, "std"), std, "sample std of the test F1 over seeds")

    def cell(d: str, h: str, key: str) -> str | None:
        rows = runs[(d, h)]
        return pm([100 * r[key] for r in rows]) if key in rows[0] else None

    res.table(
        f"Per-head test results (%, mean ± sample std over {n} seed(s))",
        ["dataset", "head", "F1", "untrained F1", "F1 (Su's CRF-Viterbi decode)", "s / epoch",
         "train s / run"],
        [
            [d, HEAD_NAMES[h], cell(d, h, "f1"), cell(d, h, "f1_untrained"),
             cell(d, h, "f1_crf_viterbi"), res.metrics[_key("sec_per_epoch", d, h)],
             res.metrics[_key("train_seconds", d, h)]]
            for d in ds for h in heads
        ],
    )  # fmt: skip
    res.table(
        f"Head loss forward+backward, ms (batch of {cfg.batch_size} training sentences, "
        "best of 6; encoder excluded)",
        ["dataset"] + [HEAD_NAMES[h] for h in heads],
        [[d] + [round(head_ms[d][h], 3) for h in heads] for d in ds],
    )
    _comparisons(res, f1, cfg, head_ms)
    means = ", ".join(
        f"{HEAD_NAMES[h]} {_mean([_mean(f1[(d, h)]) for d in ds]):.2f}" for h in heads
    )
    res.headline = (
        f"Same char-{cfg.encoder} encoder, {len(heads)} heads, {n} seed(s): mean test F1 "
        f"{means} over {', '.join(ds)}."
    )
    enc = f"{cfg.num_layers} x Conv1D(k=3, ReLU)" if cfg.encoder == "cnn" else "BiLSTM"
    data = "; ".join(f"{d} {sizes[d][0]} / {sizes[d][1]}" for d in ds)
    res.note(
        f"Encoder: character embedding + {enc}, {cfg.hidden_dim} channels, from scratch (the "
        "article: pretrained BERT-base, ~96% F1; ours is the 'weak encoder' regime). Training: "
        f"Adam lr {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epoch(s), seeds "
        f"{list(cfg.seeds)}, loss reduction '{cfg.reduction}' for every head; no constraints, "
        f"no start/end transitions. Data (train / test examples after cutting): {data}; PKU/MSR "
        "train on the last 10% of the official training set (normalised); no model selection."
    )
    res.note(
        "MEMM/Bi-MEMM F1 uses exact decoding of the model's own probability (Bi-MEMM: product of "
        "the two directions); the CRF-Viterbi column decodes emissions + transitions like the "
        "article's scripts. Times are wall-clock on a shared CPU, one intra-op thread: indicative."
    )
    draw_plots(res, f1, runs, cfg, out_dir, HEAD_NAMES, HEADS)
    return res


def _comparisons(res: Result, f1: dict, cfg: Config, head_ms: dict) -> None:
    ds, have, m = list(cfg.datasets), set(cfg.heads), res.metrics
    if {"softmax", "memm", "bimemm"} <= have:
        claims, verdicts = [], []
        for d in ds:
            a = rank_claim("Bi-MEMM", f1[(d, "bimemm")], "MEMM", f1[(d, "memm")])
            b = rank_claim("MEMM", f1[(d, "memm")], "softmax", f1[(d, "softmax")])
            claims.append(f"{d}: {a}; {b}")
            if a.startswith("Bi-MEMM > MEMM") and b.startswith("MEMM > softmax"):
                verdicts.append("holds")
            else:  # a significant gap the wrong way contradicts the ranking
                verdicts.append("within noise" if "≈" in a + b else "does not hold")
        one = verdicts[0] if len(set(verdicts)) == 1 else "partly"
        res.compare("ranking, same settings (test F1 %)", article=ARTICLE["ranking"],
                    ours=" | ".join(claims), verdict=one,
                    note=f"{len(cfg.seeds)} seed(s) per head")  # fmt: skip
    if {"crf", "bimemm"} <= have:
        claims = [f"{d}: " + rank_claim("CRF", f1[(d, "crf")], "Bi-MEMM", f1[(d, "bimemm")])
                  for d in ds]  # fmt: skip
        worse = any("Bi-MEMM > CRF" in c for c in claims)
        noise = all("within noise" in c for c in claims)
        res.compare("CRF vs Bi-MEMM (test F1 %)", article=ARTICLE["crf"], ours=" | ".join(claims),
                    verdict="does not hold" if worse else "within noise" if noise else "holds",
                    note=f"a small char-{cfg.encoder} from scratch: a weak encoder")  # fmt: skip
        crf_s = sum(m[_key("sec_per_epoch", d, "crf")] for d in ds)
        bi_s = sum(m[_key("sec_per_epoch", d, "bimemm")] for d in ds)
        hs = sum(head_ms[d]["crf"] / head_ms[d]["bimemm"] for d in ds) / len(ds)
        res.metric("train_speedup_bimemm_vs_crf", round(crf_s / bi_s, 3),
                   "CRF ÷ Bi-MEMM training s/epoch (sum over sets)")  # fmt: skip
        res.metric("head_speedup_bimemm_vs_crf", round(hs, 3),
                   "CRF ÷ Bi-MEMM head loss fwd+bwd time (mean over sets)")  # fmt: skip
        res.compare("training speed (whole step, encoder included)", article=ARTICLE["speed"],
                    ours=f"Bi-MEMM {ratio_text(bi_s, crf_s)} than CRF per epoch; "
                    f"head alone {ratio_text(1.0, hs)}",
                    note="one timing per run, shared CPU; not the article's encoder")  # fmt: skip
    if {"crf", "memm"} <= have:
        memm = sum(m[_key("chars_per_s", d, "memm")] for d in ds)
        crf = sum(m[_key("chars_per_s", d, "crf")] for d in ds)
        res.compare("prediction speed (MEMM ÷ CRF decode chars/s)", article=ARTICLE["predict"],
                    ours=f"{memm / crf:.2f}", note="our MEMM decodes exactly with its local "
                    "normalisers; Su's CRF-style Viterbi costs the same as the CRF")  # fmt: skip
    for d in ("pku-cws", "msra-ner"):
        if d in ds and "crf" in have:
            sub = ", subsampled" if _n_train(cfg, d) else ""
            res.compare(f"CRF test F1, {d}", article=ARTICLE[d], ours=pm(f1[(d, "crf")]) + " %",
                        verdict="not comparable",
                        note=f"no BERT: char-{cfg.encoder} from scratch{sub}")  # fmt: skip
