"""Experiment registry: one module per article, each reproducing the article's claim on real data.

Each experiment module defines

* ``Config``: a frozen dataclass of every knob;
* ``PRESETS = {"smoke": Config(...), "quick": Config(...), "full": Config(...)}`` (smoke: seconds,
  run by the tests; quick: minutes, run by ``make report``; full: the article's scale);
* ``run(cfg: Config, out_dir: Path, progress: bool = True) -> dict``: does the work, writes its PNG
  plots into ``out_dir`` and returns the results dict (schema in :mod:`kexue.report.schema`).

and is listed in :data:`REGISTRY` below. :func:`kexue.experiments.runner.reproduce` resolves the
preset, applies ``key=value`` overrides, times the run, adds the environment and writes
``results.json``, ``config.json`` and ``section.md``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Entry:
    """One registered experiment."""

    name: str
    module: str
    article: str  # article title (Chinese original) and date
    part: str  # the kexue subpackage it exercises
    summary: str  # one line: what it shows
    full_time: str = ""  # the full preset's wall time on 2 CPU cores: measured, or an estimate

    def load(self) -> ModuleType:
        """Import the experiment module (lazily, so `kexue list` stays fast)."""
        return importlib.import_module(self.module)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> None:
    """Add ``entry`` to :data:`REGISTRY` (names are unique)."""
    if entry.name in REGISTRY:
        raise ValueError(f"experiment {entry.name!r} registered twice")
    REGISTRY[entry.name] = entry


register(
    Entry(
        name="init-geometry",
        module="kexue.experiments.init_geometry",
        article="从几何视角来理解模型参数的初始化策略 “A geometric view of parameter initialisation” (2020-01-16) + n维空间下两个随机向量的夹角分布 “The angle between two random vectors in n dimensions” (2019-11-13)",
        part="kexue.init",
        summary="random vectors are nearly orthogonal; variance-1/m init preserves norms through 50 layers",
        full_time="measured once: 1832 s (30 min), niced on a shared 2-core machine",
    )
)
register(
    Entry(
        name="sparse-attention",
        module="kexue.experiments.sparse_attention",
        article="为节约而生：从标准Attention到稀疏Attention “Born to save: from standard to sparse attention” (2019-07-27)",
        part="kexue.attention",
        summary="atrous/local/sparse attention in O(n*w): speed, memory, char-LM quality at equal time",
        full_time="~5 h (estimate: 4 patterns x 3000 steps at context 512, then 6 patterns x 3 seeds"
        " x 600 s at context 8192)",
    )
)
register(
    Entry(
        name="crf-memm",
        module="kexue.experiments.crf_memm",
        article="CRF用过了，不妨再了解下更快的MEMM？ “Used CRF? Meet the faster MEMM” (2020-02-24)",
        part="kexue.tagging",
        summary="softmax vs CRF vs MEMM vs Bi-MEMM heads on Chinese word segmentation and NER, "
        "beside jieba and a tiny BERT encoder",
        full_time="many hours (estimate: whole training sets, 4 heads x 4 sets x 3 seeds)",
    )
)
register(
    Entry(
        name="optimizers",
        module="kexue.experiments.optimizers",
        article="Keras实现两个优化器：Lookahead和LazyOptimizer “Two optimizers in Keras: Lookahead and LazyOptimizer” (2019-07-30)",
        part="kexue.optim",
        summary="Lookahead(Adam) vs Adam vs SGD on MNIST; Lazy(Adam) vs Adam on an embedding-heavy model",
        full_time="measured once: 2055 s (34 min), niced on an otherwise idle 2-core machine",
    )
)

register(
    Entry(
        name="vq-vae",
        module="kexue.experiments.vq_vae",
        article="VQ-VAE的简明介绍：量子化自编码器 “A brief introduction to VQ-VAE: the quantised auto-encoder” (2019-06-24)",
        part="kexue.vq",
        summary="VQ-VAE on MNIST (28x28 -> 7x7 codes): reconstruction, codebook usage, gated PixelCNN prior NLL and samples",
        full_time="~3 h (estimate)",
    )
)

register(
    Entry(
        name="batchnorm",
        module="kexue.experiments.batchnorm",
        article="BN究竟起了什么作用？一个闭门造车的分析 “What does BN actually do? An armchair analysis” (2019-10-11)",
        part="kexue.analysis",
        summary="same CNN with/without BN on MNIST: loss range, gradient predictiveness, effective beta, top Hessian eigenvalue, largest trainable LR",
        full_time="measured once: 1721 s (29 min), niced, one thread, beside other work on 2 cores",
    )
)

register(
    Entry(
        name="bidirectional-decoding",
        module="kexue.experiments.bidirectional_decoding",
        article="seq2seq之双向解码 “Bidirectional decoding for seq2seq” (2019-08-09)",
        part="kexue.seq2seq",
        summary="L2R vs synchronous L2R+R2L decoding for Chinese title generation (LCSTS, CSL): ROUGE/BLEU by length, first/last-4 accuracy",
        full_time="<= 3 h (estimate, not run yet: 18 models x 1200 steps on 2 cores)",
    )
)
register(
    Entry(
        name="mlm-mrc",
        module="kexue.experiments.mlm_mrc",
        article="“非自回归”也不差：基于MLM的阅读理解问答 “Non-autoregressive is not bad either: reading comprehension with an MLM” (2019-12-26)",
        part="kexue.mrc",
        summary="MLM reader (one pass, passage-constrained) vs UniLM AR and span readers on CMRC 2018: EM, F1, questions/s",
        full_time="~30 h (estimate: 20k-step 256-d BERT pretraining ~20 h, then 3 readers x 3000 steps)",
    )
)


def get(name: str) -> Entry:
    """Look up an experiment by name; ``ValueError`` lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "(none)"
        raise ValueError(f"unknown experiment {name!r}; known: {known}") from None
