r"""Experiment ``bidirectional-decoding``: L2R vs synchronous bidirectional decoding on titles.

Su Jianlin, 《seq2seq之双向解码》 (kexue.fm, 2019-08-09), after Zhou, Zhang & Zong, TACL 2019.
Claim: a left-to-right decoder is more accurate at the start of its output than at the end;
decoding L2R and R2L in lock-step, each attending to the other, improves the output, mostly the
tail of long outputs. Su reports no number for his title task; the paper's table (Transformer,
NIST Zh-En) gives first-4 / last-4 token accuracy 40.21% / 35.10% (L2R) and 35.67% / 39.47% (R2L).

Setup: character-level title generation on an LCSTS subset (text -> headline, official split) and
CSL (abstract -> title; train = CLGE val + CLGE test + ydli-ai ts dev, test = ts test: a
**non-standard** split, the official training files are not shipped). Both models share the
encoder size, decoder size, copy prior, data, steps and batch (same budget); the bidirectional
model adds an R2L decoder and the cross-direction attention. Reported: character ROUGE-1/2/L and
BLEU (overall and by reference length), accuracy of the first and last 4 characters, the teacher-
forced loss (where the training leak shows) and sample outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kexue import data
from kexue.core.checks import check_config_int
from kexue.core.threads import num_threads
from kexue.report.plots import line_panels
from kexue.report.result import Result, rank_claim
from kexue.seq2seq import recipe
from kexue.seq2seq.metrics import char_tokens, title_scores

ARTICLE_TABLE = (
    "L2R 40.21% / 35.10%, R2L 35.67% / 39.47% (first / last 4 tokens; paper, NIST Zh-En)"
)
KINDS = ("l2r", "bidirectional")
_DATASETS = ("lcsts", "csl")


@dataclass(frozen=True)
class Config:
    """Every knob (``train_size``/``test_size`` 0 = the whole split)."""

    datasets: tuple[str, ...] = _DATASETS
    train_size: int = 0
    test_size: int = 1000
    eval_split: str = "test"  # "train": score on the training pairs (smoke: a memorisation check)
    max_src_len: int = 128
    max_tgt_len: int = 32
    embed_dim: int = 128
    num_heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    beam_size: int = 3
    seeds: tuple[int, ...] = (0,)
    copy_prior: bool = True
    pointer: bool = True  # pointer-generator output (copies source characters)
    copy_continuation: bool = True  # pointer bonus for continuing the previous copy
    label_smoothing: float = 0.0
    holdout: int = 0  # last N training pairs held out: dev ROUGE-L selects the kept step
    pseudo: bool = False  # third model: bidirectional trained on the L2R model's pseudo targets
    samples: int = 3
    threads: int = 0  # torch threads for the run (0: leave as is)

    def __post_init__(self) -> None:
        if not self.datasets or any(d not in _DATASETS for d in self.datasets):
            raise ValueError(
                f"datasets must be a non-empty subset of {_DATASETS}, got {self.datasets!r}"
            )
        if self.eval_split not in ("test", "train"):
            raise ValueError(f"eval_split must be 'test' or 'train', got {self.eval_split!r}")
        for name in ("train_size", "test_size", "samples", "threads", "holdout"):
            check_config_int(getattr(self, name), name, 0)
        for name in ("max_src_len", "max_tgt_len", "embed_dim", "num_heads", "layers", "steps",
                     "batch_size", "warmup", "beam_size"):  # fmt: skip
            check_config_int(getattr(self, name), name, 1)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty tuple of ints, got {self.seeds!r}")
        for flag in ("copy_prior", "pointer", "pseudo", "copy_continuation"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


# fmt: off
PRESETS = {
    # seconds: 16 training pairs, scored on themselves (plumbing + "it learns" check)
    "smoke": Config(train_size=16, test_size=16, eval_split="train", max_src_len=40, max_tgt_len=24,
                    embed_dim=64, layers=1, dropout=0.0, steps=80, batch_size=16, lr=6e-3,
                    warmup=5, beam_size=2, samples=2, pseudo=True, threads=1),
    # minutes on one core: the pointer models of `kexue seq2seq train` (d=128, source 128),
    # 500 steps each, the kept step chosen on 200 held-out training pairs, 200 test pairs per set
    "quick": Config(test_size=200, max_src_len=128, max_tgt_len=32, embed_dim=128, layers=2,
                    steps=500, batch_size=32, lr=2e-3, warmup=50, holdout=200, threads=1),
    # <= 3 h on 2 cores (estimate, not run yet): 3 seeds x (L2R, bidirectional, bidirectional on
    # pseudo targets) x 2 sets, 1200 steps each, every test pair scored
    "full": Config(test_size=0, max_src_len=128, max_tgt_len=32, embed_dim=128, layers=2,
                   steps=1200, batch_size=32, lr=2e-3, warmup=100, holdout=200, label_smoothing=0.1,
                   seeds=(0, 1, 2), pseudo=True, threads=2),
}
# fmt: on


def _pairs(name: str, cfg: Config) -> tuple[list, list, list]:
    """``(train, dev, test)``: dev = the last ``holdout`` training pairs (model selection)."""
    train = data.load(name, "train")
    test = data.load(name, "test") if cfg.eval_split == "test" else train
    if cfg.train_size:
        train = train[: cfg.train_size]
    dev: list = []
    if cfg.holdout:
        if cfg.holdout >= len(train):
            raise ValueError(f"holdout={cfg.holdout} leaves no {name} training pairs")
        train, dev = train[: -cfg.holdout], train[-cfg.holdout :]
    if cfg.eval_split == "train":
        test = train
    return train, dev, test[: cfg.test_size] if cfg.test_size else test


def _one(cfg: Config, kind: str, seed: int, vocab, train_ds, test, dev) -> dict:
    model_kw = {
        "embed_dim": cfg.embed_dim,
        "num_heads": cfg.num_heads,
        "encoder_layers": cfg.layers,
        "decoder_layers": cfg.layers,
        "dropout": cfg.dropout,
        "copy_prior": cfg.copy_prior,
        "pointer": cfg.pointer,
        "copy_continuation": cfg.pointer and cfg.copy_continuation,
    }
    fit_kw = {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup": cfg.warmup,
              "label_smoothing": cfg.label_smoothing}  # fmt: skip
    return recipe.train_and_decode("l2r" if kind == "l2r" else "bidirectional", vocab, train_ds,
                                   test, model_kw=model_kw, fit_kw=fit_kw, dev=dev,
                                   max_src_len=cfg.max_src_len, max_tgt_len=cfg.max_tgt_len,
                                   beam_size=cfg.beam_size, seed=seed)  # fmt: skip


def run(cfg: Config, out_dir: Path, progress: bool = True) -> Result:
    """Train both models per dataset and seed, decode, score; write ``position_accuracy.png``."""
    out_dir = Path(out_dir)
    if cfg.threads:
        with num_threads(cfg.threads):
            return _run(cfg, out_dir, progress)
    return _run(cfg, out_dir, progress)


def _run(cfg: Config, out_dir: Path, progress: bool) -> Result:
    say = print if progress else (lambda *a, **k: None)
    res = Result(headline="")
    main_rows, length_rows, sample_rows, curves = [], [], [], {}
    kinds = KINDS + (("pseudo",) if cfg.pseudo else ())
    tail, rl = {k: [] for k in kinds}, {k: [] for k in kinds}
    headline = []
    for name in cfg.datasets:
        train, dev, test = _pairs(name, cfg)
        vocab = recipe.build_vocab(train)
        lim = {"max_src_len": cfg.max_src_len, "max_tgt_len": cfg.max_tgt_len}
        train_ds = recipe.encode_pairs(vocab, train, **lim)
        refs = [t for _, t in test]
        lead_n = round(sum(len(char_tokens(t)) for _, t in train) / len(train))
        lead = title_scores(recipe.lead_baseline(test, lead_n), refs)
        label = f"{name}: ROUGE-L of the first {lead_n} source characters"
        res.metric(f"{name}_lead_rougeL", lead["rougeL"], label)
        long_refs = [i for i, r in enumerate(refs) if len(char_tokens(r)) >= 8]
        per_kind, l2r_models = {}, {}
        for kind in kinds:
            runs = []
            for seed in cfg.seeds:
                say(f"[bidirectional-decoding] {name} {kind} seed {seed}: {cfg.steps} steps")
                ds = train_ds  # the pseudo arm: contexts from the same-seed L2R model's titles
                if kind == "pseudo":
                    ds = recipe.pseudo_target_data(l2r_models[seed], train_ds, cfg.max_tgt_len)
                runs.append(_one(cfg, kind, seed, vocab, ds, test, dev))
                if kind == "l2r":
                    l2r_models[seed] = runs[-1]["model"]
                runs[-1]["model"] = None  # the pseudo arm needs the L2R models only
            r0 = runs[0]
            per_kind[kind] = r0
            sc = [title_scores(r["hyps"], refs) for r in runs]
            pos = [recipe.position_accuracy([r["hyps"][i] for i in long_refs], [refs[i] for i in long_refs])
                   for r in runs] if long_refs else [(float("nan"), float("nan"))] * len(runs)  # fmt: skip
            tail[kind] += [p[1] for p in pos]
            rl[kind] += [s["rougeL"] for s in sc]
            m = {k: sum(s[k] for s in sc) / len(sc) for k in sc[0]}
            first, last = (sum(p[i] for p in pos) / len(pos) for i in (0, 1))
            key = f"{name}_{kind}"
            # fmt: off
            for suffix, value, label in (
                *((mt, m[mt], f"{mt} (mean over seeds)") for mt in ("rouge1", "rouge2", "rougeL", "bleu")),
                ("first4_acc", first, "accuracy of the first 4 characters"),
                ("last4_acc", last, "accuracy of the last 4 characters"),
                ("loss_start", r0["loss0"], "training loss on 64 pairs, before"),
                ("loss_end", r0["loss1"], "the same after training"),
                ("test_loss", r0["test_loss"], "teacher-forced loss on 64 eval pairs"),
                ("train_s", r0["train_s"], f"training seconds (seed {cfg.seeds[0]})"),
            ):
                res.metric(f"{key}_{suffix}", value, f"{name} {kind}: {label}")
            # fmt: on
            main_rows.append(
                [
                    name,
                    {"pseudo": "bidirectional + pseudo targets"}.get(kind, kind),
                    f"{100 * m['rouge1']:.1f}",
                    f"{100 * m['rouge2']:.1f}",
                    f"{100 * m['rougeL']:.1f}",
                    f"{100 * m['bleu']:.1f}",
                    f"{100 * first:.1f}",
                    f"{100 * last:.1f}",
                    f"{r0['loss1']:.3f}",
                    f"{r0['test_loss']:.3f}",
                    f"{r0['params'] / 1e6:.2f}M",
                    f"{r0['train_s']:.0f}",
                    f"{100 * r0['r2l_share']:.0f}%" if kind != "l2r" else "—",
                    str(r0["kept_step"]),
                ]
            )  # fmt: skip
            curves[(name, kind)] = recipe.position_curve(r0["hyps"], refs, long_refs)
        main_rows.append([name, "lead baseline", f"{100 * lead['rouge1']:.1f}", f"{100 * lead['rouge2']:.1f}",
                          f"{100 * lead['rougeL']:.1f}", f"{100 * lead['bleu']:.1f}", "", "", "", "", "", "",
                          "", ""])  # fmt: skip
        for bucket, idx in recipe.length_buckets(refs):
            row = [name, bucket, len(idx)]
            for kind in kinds:
                s = title_scores([per_kind[kind]["hyps"][i] for i in idx], [refs[i] for i in idx])
                row += [f"{100 * s['rougeL']:.1f}", f"{100 * s['bleu']:.1f}"]
            length_rows.append(row)
        for i in range(min(cfg.samples, len(test))):
            src = "".join(char_tokens(test[i][0]))
            sample_rows.append([name, src[:60] + ("…" if len(src) > 60 else ""), refs[i],
                                *(per_kind[k]["hyps"][i] for k in kinds)])  # fmt: skip
        gap = res.metrics[f"{name}_bidirectional_rougeL"] - res.metrics[f"{name}_l2r_rougeL"]
        headline.append(f"{name}: ROUGE-L {100 * res.metrics[f'{name}_l2r_rougeL']:.1f} (L2R) vs "
                        f"{100 * res.metrics[f'{name}_bidirectional_rougeL']:.1f} (bidirectional, {gap * 100:+.1f})")  # fmt: skip

    split = "training pairs (memorisation check)" if cfg.eval_split == "train" else "test pairs"
    tail_txt = f" — {len(cfg.seeds)} seed(s), {cfg.steps} steps each, scored on {split}"
    res.headline = "; ".join(headline) + tail_txt
    res.table("Title generation (character level, %)",
              ["set", "model", "R-1", "R-2", "R-L", "BLEU", "first-4 acc", "last-4 acc", "train loss",
               "eval loss (teacher-forced)", "params", "train s", "R2L wins", "kept step"], main_rows,
              caption="first/last-4: character accuracy at the first and last 4 positions, references "
              ">= 8 characters; losses on 64 fixed pairs; bidirectional loss = mean of both directions; "
              "kept step: chosen by greedy ROUGE-L on held-out training pairs (the last step without "
              "a holdout)")  # fmt: skip
    short = {"l2r": "L2R", "bidirectional": "bi", "pseudo": "bi+pseudo"}
    cols = ["set", "reference length", "pairs"] + [
        f"{short[k]} {m}" for k in kinds for m in ("R-L", "BLEU")
    ]
    res.table("ROUGE-L / BLEU by reference length (%)", cols, length_rows)
    res.table(
        "Sample outputs", ["set", "source", "reference", *(short[k] for k in kinds)], sample_rows
    )
    verdicts = {}
    for what, vals in (("tail", tail), ("rougeL", rl)):
        claim = rank_claim("bidirectional", vals["bidirectional"], "L2R", vals["l2r"])
        verdict = "within noise"  # needs >= 3 runs per model and a gap above the spread
        if "within noise" not in claim:
            verdict = "holds" if claim.startswith("bidirectional") else "does not hold"
        verdicts[what] = (claim + " (all sets pooled)", verdict)
    if cfg.eval_split == "train":
        verdicts["rougeL"] = (verdicts["rougeL"][0], "not comparable")
    ours = ", ".join(f"{name}: L2R {100 * res.metrics[f'{name}_l2r_last4_acc']:.1f}% vs bi "
                     f"{100 * res.metrics[f'{name}_bidirectional_last4_acc']:.1f}%" for name in cfg.datasets)  # fmt: skip
    res.compare("last-4 accuracy, L2R vs bidirectional", article=ARTICLE_TABLE, ours=ours,
                note=verdicts["tail"][0], verdict=verdicts["tail"][1])  # fmt: skip
    res.compare("title quality (ROUGE-L)", article="improves, mostly at the start and end of long titles (no number)",
                ours="; ".join(headline), note=verdicts["rougeL"][0], verdict=verdicts["rougeL"][1])  # fmt: skip
    if cfg.pseudo:
        claim = rank_claim("bi+pseudo", rl["pseudo"], "L2R", rl["l2r"])
        verdict = "within noise"
        if "within noise" not in claim:
            verdict = "holds" if claim.startswith("bi+pseudo") else "does not hold"
        ours = "; ".join(f"{name}: {100 * res.metrics[f'{name}_pseudo_rougeL']:.1f} vs L2R "
                         f"{100 * res.metrics[f'{name}_l2r_rougeL']:.1f}" for name in cfg.datasets)  # fmt: skip
        res.compare("title quality (ROUGE-L), bidirectional on pseudo targets",
                    article="the paper's leak mitigation (Su describes it, does not run it)",
                    ours=ours, note=claim + " (all sets pooled)", verdict=verdict)  # fmt: skip
    panels = [{"series": {k: (list(range(8)), curves[(name, k)]) for k in kinds}, "title": name,
               "xlabel": "position: 1-4 from the start (0-3), 4-1 from the end (4-7)",
               "ylabel": "character accuracy"} for name in cfg.datasets]  # fmt: skip
    caption = "per-position accuracy, references >= 8 chars"
    res.plot(line_panels(panels, out_dir / "position_accuracy.png", width=5.0, height=3.6), caption)
    res.note("Leak: the bidirectional model's teacher-forced loss uses gold tokens of the other direction, "
             "so compare its 'eval loss' with generation quality, not with the L2R loss: at test time the "
             "context comes from its own predictions. Mitigation (pseudo targets) is available as "
             "`BidirectionalSeq2Seq.loss(..., pseudo=...)`; "
             + ("the 'bidirectional + pseudo targets' model is trained with it: its other-direction "
                "context comes from the same-seed L2R model's greedy titles of the training sources."
                if cfg.pseudo else "this run trains without it (pseudo=False)."))  # fmt: skip
    res.note("CSL split is non-standard: train = CLGE val + CLGE test + ydli-ai ts dev (3,000), "
             "test = ydli-ai ts test (1,000); the official training sets are not shipped. "
             f"Config: {asdict(cfg)}.")  # fmt: skip
    if cfg.eval_split == "train":
        res.note("smoke preset: models are scored on their own 16 training pairs — a plumbing/learning "
                 "check, not a result.")  # fmt: skip
    return res
