"""Recipes for article 1: a character LM on the shipped Chinese text, trained per pattern.

The only module of :mod:`kexue.attention` that imports :mod:`kexue.data` and :mod:`kexue.train`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from kexue import data
from kexue.attention.lm import CharLM, bits_per_char
from kexue.core.seed import seed_everything
from kexue.train import TrainConfig, Trainer


def text_stream(split: str, limit: int) -> str:
    """The ``chinese-text`` split's sentences joined by newlines, first ``limit`` characters."""
    out, total = [], 0
    for s in data.load("chinese-text", split):
        out.append(s)
        total += len(s) + 1
        if total >= limit:
            break
    return "\n".join(out)[:limit]


def windows(ids: torch.Tensor, length: int) -> torch.Tensor:
    """Non-overlapping ``(N, length + 1)`` windows of a ``(M,)`` stream (inputs + targets)."""
    n = (len(ids) - 1) // length
    idx = torch.arange(n)[:, None] * length + torch.arange(length + 1)[None, :]
    return ids[idx]


@dataclass
class CharCorpus:
    """Encoded train/valid/test streams of the shipped text under one vocabulary."""

    vocab: data.Vocab
    train: torch.Tensor  # (N,) ids
    valid: torch.Tensor
    test: torch.Tensor


def char_corpus(train_chars: int, eval_chars: int, vocab_size: int) -> CharCorpus:
    """Build the vocabulary on the first ``train_chars`` training characters and encode."""
    train_text = text_stream("train", train_chars)
    vocab = data.Vocab.build([train_text], max_size=vocab_size)
    unk = vocab.index[vocab.unk]

    def encode(text: str) -> torch.Tensor:
        return torch.tensor([vocab.index.get(c, unk) for c in text], dtype=torch.long)

    return CharCorpus(
        vocab,
        encode(train_text),
        encode(text_stream("valid", eval_chars)),
        encode(text_stream("test", eval_chars)),
    )


@dataclass(frozen=True)
class LMSetup:
    """Model and training budget of one char-LM run."""

    seq_len: int
    dim: int
    heads: int
    layers: int
    window: int
    rate: int
    steps: int
    batch_size: int
    lr: float
    dropout: float
    eval_every: int
    seed: int = 0


@dataclass
class LMRun:
    """What one char-LM run measured."""

    pattern: str
    test_bpc: float
    valid_bpc: float
    tokens_per_s: float
    train_s: float
    params: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, valid bpc)


def train_char_lm(
    corpus: CharCorpus, pattern: str, setup: LMSetup, out_dir: Path, progress: bool = True
) -> LMRun:
    """Train a :class:`~kexue.attention.lm.CharLM` with ``pattern`` through the Trainer.

    Seeded with ``setup.seed`` before the model is built, so every pattern starts from the
    same embedding/position initialisation. Test bpc is measured on ``corpus.test``.
    """
    train, valid, test = (
        windows(x, setup.seq_len) for x in (corpus.train, corpus.valid, corpus.test)
    )
    seed_everything(setup.seed)
    model = CharLM(
        vocab_size=len(corpus.vocab), max_len=setup.seq_len, dim=setup.dim,
        num_heads=setup.heads, num_layers=setup.layers, pattern=pattern, window=setup.window,
        rate=setup.rate, dropout=setup.dropout,
    )  # fmt: skip

    def loss_fn(m: nn.Module, batch: list[torch.Tensor]):
        w = batch[0]
        logits = m(w[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten())
        return loss, {"tokens": float(w[:, 1:].numel())}

    steps = setup.steps
    trainer = Trainer(
        model, torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=0.01),
        train_data=TensorDataset(train), loss_fn=loss_fn,
        eval_fn=lambda m: {"valid_bpc": bits_per_char(m, valid)},
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10))
        ),
        config=TrainConfig(
            max_steps=steps, batch_size=setup.batch_size, eval_every=setup.eval_every,
            log_every=max(1, min(20, steps)), grad_clip=1.0, seed=setup.seed, device="cpu",
            keep_last=1,
        ),
        out_dir=out_dir, progress=progress,
    )  # fmt: skip
    t0 = time.perf_counter()
    hist = trainer.fit()
    train_s = time.perf_counter() - t0
    tps = hist.get("tokens_per_s") or steps * setup.batch_size * setup.seq_len / train_s
    return LMRun(
        pattern=pattern,
        test_bpc=bits_per_char(model, test),
        valid_bpc=hist["eval"].get("valid_bpc", math.nan),
        tokens_per_s=float(tps),
        train_s=train_s,
        params=sum(p.numel() for p in model.parameters()),
        curve=[(e["step"], e["valid_bpc"]) for e in hist["evals"] if "valid_bpc" in e],
    )
