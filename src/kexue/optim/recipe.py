"""Recipes for article 4: Lookahead on an MNIST MLP, Lazy Adam on an embedding-heavy classifier.

The only module of :mod:`kexue.optim` that imports :mod:`kexue.data` and :mod:`kexue.train`. Each
run is seeded before its model is built, so every optimizer starts from the same weights.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from kexue import data
from kexue.core.seed import seed_everything
from kexue.optim.lazy import Lazy
from kexue.optim.lookahead import Lookahead
from kexue.optim.textclf import BagClassifier, char_features, cjk_only, collate_bags
from kexue.train import TrainConfig, Trainer

# the four shipped corpora the text classifier tells apart: (dataset, train split, test split)
SOURCES = (
    ("msra-ner", "train", "test"),
    ("cluener", "train", "dev"),
    ("lcsts", "train", "test"),
    ("csl", "train", "test"),
)
MNIST_OPTIMIZERS = ("sgd", "adam", "lookahead_adam")
TEXT_OPTIMIZERS = ("adam", "lazy_freeze", "lazy_decay")


@dataclass
class RunRecord:
    """One (optimizer, seed) training run: per-epoch evals, loss curve, final eval, step time."""

    seed: int
    evals: list[dict[str, Any]]
    final: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, windowed train loss)
    step_ms: float = float("nan")  # median optimizer.step() time


@torch.no_grad()
def classify(model: nn.Module, x: Any, y: torch.Tensor, batch: int = 2048) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``.

    Args:
        model: a classifier.
        x: ``(N, ...)`` tensor, or a list of ``(N,)`` id tensors for :class:`BagClassifier`.
        y: ``(N,)`` labels.
    """
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch):
        if torch.is_tensor(x):
            logits = model(x[i : i + batch])
        else:
            logits = model(*collate_bags([(ids, 0) for ids in x[i : i + batch]])[0])
        loss += nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += int((logits.argmax(-1) == y[i : i + batch]).sum())
    model.train(was)
    return {"acc": correct / len(y), "loss": loss / len(y)}


def mnist_data(
    n_train: int, n_test: int
) -> tuple[TensorDataset, tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, flattened MNIST: the first ``n_train`` training and ``n_test`` test images."""

    def prep(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = data.load("mnist", split)
        return (x[:n].reshape(-1, 784).float() / 255 - 0.1307) / 0.3081, y[:n]

    return TensorDataset(*prep("train", n_train)), prep("test", n_test)


def _windowed(losses: list[float], every: int) -> list[tuple[int, float]]:
    return [
        (i + every, sum(losses[i : i + every]) / every)
        for i in range(0, len(losses) - every + 1, every)
    ]


def train_mnist(
    name: str, seed: int, train_ds: TensorDataset, test: tuple[torch.Tensor, torch.Tensor], *,
    hidden: int, epochs: int, batch_size: int, adam_lr: float, sgd_lr: float, momentum: float,
    k: int, alpha: float, log_every: int, progress: bool = True,
) -> RunRecord:  # fmt: skip
    """Train a 784-hidden-10 MLP with optimizer ``name`` (one of :data:`MNIST_OPTIMIZERS`).

    Lookahead runs are also evaluated on their slow weights (``slow_acc``, ``slow_loss``).
    """
    xte, yte = test
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=sgd_lr, momentum=momentum
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=adam_lr)
        if name == "lookahead_adam":
            opt = Lookahead(opt, k=k, alpha=alpha)

    def evaluate(m: nn.Module) -> dict[str, float]:
        out = classify(m, xte, yte)
        if isinstance(opt, Lookahead):
            with opt.slow_weights():
                slow = classify(m, xte, yte)
            out |= {"slow_acc": slow["acc"], "slow_loss": slow["loss"]}
        return out

    losses: list[float] = []

    def loss_fn(m: nn.Module, b: list[torch.Tensor]) -> torch.Tensor:
        loss = nn.functional.cross_entropy(m(b[0]), b[1])
        losses.append(float(loss.detach()))
        return loss

    steps_per_epoch = -(-len(train_ds) // batch_size)
    hist = Trainer(
        model, opt, train_data=train_ds, loss_fn=loss_fn, eval_fn=evaluate, out_dir=None,
        progress=progress,
        config=TrainConfig(epochs=epochs, batch_size=batch_size, eval_every=steps_per_epoch,
                           log_every=log_every, seed=seed, device="cpu", keep_last=1),
    ).fit()  # fmt: skip
    return RunRecord(seed, hist["evals"], hist["eval"], _windowed(losses, log_every))


@dataclass
class TextData:
    """Encoded corpus-source classification data (feature id 0 = unseen in training)."""

    train: list[tuple[torch.Tensor, int]]
    test: list[tuple[torch.Tensor, int]]
    num_features: int


def text_data(train_per_class: int, test_per_class: int, max_chars: int) -> TextData:
    """Texts of the four :data:`SOURCES` with >= 8 CJK characters, as unigram+bigram feature ids.

    The vocabulary keeps every feature seen in training, so most rows are rare.
    """

    def texts(name: str, split: str) -> list[str]:
        rows = data.load(name, split)
        if name in ("msra-ner", "cluener"):
            return ["".join(tokens) for tokens, _ in rows]
        return [src for src, _ in rows]

    train, test = [], []
    for label, (name, tr, te) in enumerate(SOURCES):
        for split, n, dest in ((tr, train_per_class, train), (te, test_per_class, test)):
            kept = [t for t in texts(name, split) if len(cjk_only(t)) >= 8][:n]
            dest += [(char_features(t, max_chars), label) for t in kept]
    counts = Counter(f for feats, _ in train for f in feats)
    vocab = {f: i + 1 for i, f in enumerate(sorted(counts))}  # 0 = unknown (test only)

    def encode(rows: list[tuple[list[str], int]]) -> list[tuple[torch.Tensor, int]]:
        return [(torch.tensor([vocab.get(f, 0) for f in feats] or [0]), y) for feats, y in rows]

    return TextData(encode(train), encode(test), len(vocab) + 1)


def train_text(
    name: str, seed: int, td: TextData, *, dim: int, epochs: int, batch_size: int, lr: float,
    log_every: int, progress: bool = True,
) -> RunRecord:  # fmt: skip
    """Train a :class:`BagClassifier` with ``name`` in :data:`TEXT_OPTIMIZERS` (dense gradients).

    Records per-epoch train/test accuracy and the median ``optimizer.step()`` time.
    """
    ytr = torch.tensor([y for _, y in td.train])
    yte = torch.tensor([y for _, y in td.test])
    xtr, xte = [x for x, _ in td.train], [x for x, _ in td.test]
    seed_everything(seed)
    model = BagClassifier(td.num_features, dim, len(SOURCES))
    opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if name != "adam":
        opt = Lazy(opt, params=[model.embedding], moments=name.split("_")[1])
    times: list[float] = []
    t0 = [0.0]
    opt.register_step_pre_hook(lambda *_: t0.__setitem__(0, time.perf_counter()))
    opt.register_step_post_hook(lambda *_: times.append(time.perf_counter() - t0[0]))

    def evaluate(m: nn.Module) -> dict[str, float]:
        tr, te = classify(m, xtr, ytr), classify(m, xte, yte)
        return {"train_acc": tr["acc"], "test_acc": te["acc"], "test_loss": te["loss"]}

    hist = Trainer(
        model, opt, train_data=td.train, collate_fn=collate_bags,
        loss_fn=lambda m, b: nn.functional.cross_entropy(m(*b[0]), b[1]),
        eval_fn=evaluate, out_dir=None, progress=progress,
        config=TrainConfig(epochs=epochs, batch_size=batch_size,
                           eval_every=-(-len(td.train) // batch_size), log_every=log_every,
                           seed=seed, device="cpu", keep_last=1),
    ).fit()  # fmt: skip
    return RunRecord(
        seed, hist["evals"], hist["eval"], step_ms=1e3 * statistics.median(times[5:] or times)
    )
