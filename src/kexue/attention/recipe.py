"""Recipes for article 1: a character LM on the shipped Chinese text, trained per pattern.

The only module of :mod:`kexue.attention` that imports :mod:`kexue.data` and :mod:`kexue.train`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from kexue import data
from kexue.attention.lm import CharLM, bits_per_char
from kexue.core.io import atomic_write_json
from kexue.core.seed import seed_everything
from kexue.core.timing import peak_extra_mib
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
class LMShape:
    """Model shape and optimiser step of a char LM: ``layers`` blocks of width ``dim``, ``heads``
    heads over ``seq_len`` characters, local ``window``, atrous/sparse rate or strided/fixed
    stride ``rate``; ``batch_size`` windows per AdamW step at learning rate ``lr``."""

    seq_len: int
    dim: int
    heads: int
    layers: int
    window: int
    rate: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class LMSetup(LMShape):
    """Model and training budget (``steps``) of one char-LM run."""

    steps: int
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
    corpus: CharCorpus,
    pattern: str,
    setup: LMSetup,
    out_dir: Path,
    progress: bool = True,
    resume: bool = False,
) -> LMRun:
    """Train a :class:`~kexue.attention.lm.CharLM` with ``pattern`` through the Trainer.

    Seeded with ``setup.seed`` before the model is built, so every pattern starts from the
    same embedding/position initialisation. Test bpc is measured on ``corpus.test``. ``resume``
    continues from the newest checkpoint in ``out_dir`` (bit-exact; tokens/s then covers the
    resumed part only).
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
    hist = trainer.fit(resume=resume)
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


@dataclass(frozen=True)
class BudgetSetup(LMShape):
    """One equal-time char-LM run: model shape, batch, and the training-time budget.

    ``clock`` is ``"cpu"`` (process CPU seconds: with torch pinned to one thread this equals
    wall-clock on an idle machine and does not charge a pattern for other jobs on a shared one) or
    ``"wall"``. Evaluation is excluded from the budget; it runs every ``eval_every_s`` seconds of
    training clock, on the first ``eval_windows`` validation windows (test bpc at the end uses
    every test window).
    """

    budget_s: float
    eval_every_s: float
    warmup_steps: int = 20
    eval_windows: int = 8
    clock: str = "cpu"
    seed: int = 0
    max_steps: int | None = None  # also stop after this many steps (reproducible runs, tests)


@dataclass
class BudgetRun:
    """What one equal-time run measured; ``curve`` rows are (train seconds, tokens, valid bpc)."""

    pattern: str
    seed: int
    test_bpc: float
    steps: int
    tokens: int
    train_s: float
    tokens_per_s: float
    peak_mib: float | None
    params: int
    curve: list[tuple[float, int, float]] = field(default_factory=list)


def _clock(kind: str):
    if kind not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', got {kind!r}")
    return time.process_time if kind == "cpu" else time.perf_counter


def train_char_lm_budget(
    corpus: CharCorpus, pattern: str, setup: BudgetSetup, progress: bool = True
) -> BudgetRun:
    r"""Train a :class:`~kexue.attention.lm.CharLM` with ``pattern`` for ``setup.budget_s`` seconds.

    The article's claim is about cost, so the budget is time, not steps: a cheaper pattern takes
    more steps in the same time. Every pattern at one seed starts from the same initialisation of
    the shared weights and draws the same sequence of random training windows (``(b, n + 1)``
    slices of ``corpus.train``), so runs differ only in the attention pattern and in how many
    steps they fit. AdamW with linear warmup over ``warmup_steps`` steps and gradient clipping at
    1. This loop, not :class:`kexue.train.Trainer`, because the budget must exclude evaluation
    time; a run is tens of seconds to minutes, so there is nothing to resume inside it.

    Returns the held-out curve (train seconds, tokens seen, valid bpc), test bpc, tokens/s and the
    peak extra resident memory of one training step at the end (CPU; ``None`` where not measurable).
    """
    now = _clock(setup.clock)
    if not setup.budget_s > 0 or not setup.eval_every_s > 0:
        raise ValueError("budget_s and eval_every_s must be > 0")
    seed_everything(setup.seed)
    model = CharLM(
        vocab_size=len(corpus.vocab), max_len=setup.seq_len, dim=setup.dim,
        num_heads=setup.heads, num_layers=setup.layers, pattern=pattern, window=setup.window,
        rate=setup.rate,
    )  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=0.01)
    warm = max(1, setup.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    valid = windows(corpus.valid, setup.seq_len)[: setup.eval_windows]
    test = windows(corpus.test, setup.seq_len)
    if not len(valid) or not len(test):
        raise ValueError(
            f"the valid/test streams hold no window of seq_len + 1 = {setup.seq_len + 1}"
        )
    span = len(corpus.train) - setup.seq_len - 1
    if span < 1:
        raise ValueError(f"the training stream is shorter than seq_len + 1 = {setup.seq_len + 1}")
    gen = torch.Generator().manual_seed(setup.seed)
    offsets = torch.arange(setup.seq_len + 1)

    def batch() -> torch.Tensor:
        starts = torch.randint(0, span + 1, (setup.batch_size, 1), generator=gen)
        return corpus.train[starts + offsets]

    def step(w: torch.Tensor) -> torch.Tensor:
        logits = model(w[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return loss

    curve = [(0.0, 0, bits_per_char(model, valid))]
    used, steps, next_eval = 0.0, 0, setup.eval_every_s
    bar = _bar(progress, setup.budget_s, f"{pattern} s{setup.seed}")
    model.train()
    cap = setup.max_steps if setup.max_steps is not None else math.inf
    while used < setup.budget_s and steps < cap:
        w = batch()
        t0 = now()
        loss = step(w)
        dt = now() - t0
        used += dt
        steps += 1
        if bar is not None:
            bar.update(min(dt, setup.budget_s - bar.n))
            bar.set_postfix(loss=f"{loss.item():.3f}", steps=steps, refresh=False)
        if used >= next_eval or used >= setup.budget_s or steps >= cap:
            curve.append(
                (used, steps * setup.batch_size * setup.seq_len, bits_per_char(model, valid))
            )
            next_eval += setup.eval_every_s
    if bar is not None:
        bar.close()
    tokens = steps * setup.batch_size * setup.seq_len
    peak = peak_extra_mib(lambda: step(batch()))  # one more step: the model is not reused
    return BudgetRun(
        pattern=pattern, seed=setup.seed, test_bpc=bits_per_char(model, test), steps=steps,
        tokens=tokens, train_s=used, tokens_per_s=tokens / used, peak_mib=peak,
        params=sum(p.numel() for p in model.parameters()), curve=curve,
    )  # fmt: skip


def _bar(progress: bool, total: float, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="s", bar_format="{l_bar}{bar}| {elapsed} {postfix}")


def equal_time_runs(
    corpus: CharCorpus,
    patterns: tuple[str, ...],
    seeds: tuple[int, ...],
    setup: BudgetSetup,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> dict[str, list[BudgetRun]]:
    """:func:`train_char_lm_budget` for every pattern and seed; ``{pattern: [run per seed]}``.

    Seeds are the outer loop so a run that is stopped part-way has every pattern at the first
    seeds rather than some patterns only. With ``cache_dir`` every finished run is written there
    (``{pattern}_s{seed}.json``, atomically, with its setup) and one already there is reused, so
    an interrupted arm resumes at run granularity; a cached run of another setup is refused.
    """
    runs: dict[str, list[BudgetRun]] = {p: [] for p in patterns}
    for s in seeds:
        for p in patterns:
            one = replace(setup, seed=s)
            path = None if cache_dir is None else Path(cache_dir) / f"{p}_s{s}.json"
            run = _cached_run(path, one) if path is not None and path.exists() else None
            if run is None:
                run = train_char_lm_budget(corpus, p, one, progress)
                if path is not None:
                    atomic_write_json(path, {"setup": asdict(one), "run": asdict(run)})
            runs[p].append(run)
    return runs


def _cached_run(path: Path, setup: BudgetSetup) -> BudgetRun:
    try:
        blob = json.loads(path.read_text())
        stored, run = blob["setup"], blob["run"]
        if stored != json.loads(json.dumps(asdict(setup))):
            raise ValueError(f"{path}: a run of another setup; pass --overwrite to start again")
        run["curve"] = [tuple(row) for row in run["curve"]]
        return BudgetRun(**run)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a finished equal-time run ({e})") from None
