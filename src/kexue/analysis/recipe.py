r"""The BN on/off harness: the same VGG-style CNN on MNIST with and without BatchNorm, trained
by :class:`kexue.train.Trainer` with plain SGD, probed every ``N`` steps.

Network (``widths = (c_1, ..., c_k)``): for each stage ``[conv3x3 -> (BN) -> ReLU] x 2 ->
maxpool2``, then a linear classifier; BatchNorm sits between each convolution and its ReLU
(Santurkar et al.'s VGG order). The plain network is the same module list without the BN layers
(convolution biases kept in both, so "with BN" = "the same network with BN layers inserted").

Probe protocol (recorded every ``probe.every`` optimizer steps as ``eval`` records in the run's
``metrics.jsonl``, next to the test accuracy):

* one fixed probe minibatch per seed (the same for both networks and every checkpoint), drawn
  from the training set;
* the model in **train mode** (BatchNorm with the probe batch's statistics: the function SGD
  actually descends), running statistics untouched;
* :func:`~kexue.analysis.step_probe` at step sizes ``lr * multipliers`` (the same absolute
  step sizes for both networks at one learning rate; Santurkar's exact range was not
  re-verified, see design note 06);
* :func:`~kexue.analysis.hessian_top_eigenvalue` in train mode, and optionally in eval mode
  (running statistics: what PyHessian measures).

Hook used: the Trainer has no step callback, so the probes run inside its ``eval_fn`` (called
every ``eval_every`` steps with RNG states saved and restored, under ``no_grad`` in eval mode;
the probes re-enable grad, switch to train mode and leave the model bit-identical).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from kexue import data
from kexue.analysis.curvature import hessian_top_eigenvalue
from kexue.analysis.landscape import step_probe
from kexue.core.checks import check_positive_int
from kexue.core.seed import seed_everything
from kexue.train import TrainConfig, Trainer
from kexue.train.metrics import MetricsLog

__all__ = [
    "ProbeConfig",
    "classification_loss",
    "evaluate",
    "lr_sweep",
    "mnist_tensors",
    "probe_metrics",
    "summarize",
    "train_with_probes",
    "vgg_cnn",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class ProbeConfig:
    """What the harness measures and how often.

    Attributes:
        every: probe every this many optimizer steps (and at the end).
        multipliers: step sizes of :func:`step_probe`, as multiples of the training lr.
        batch_size: size of the fixed probe minibatch.
        eig_iters: maximum power-iteration steps for the top Hessian eigenvalue.
        eig_tol: relative tolerance of the power iteration.
        eval_mode_eigen: also measure the top eigenvalue in eval mode (running-statistics BN).
    """

    every: int = 50
    multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    batch_size: int = 256
    eig_iters: int = 20
    eig_tol: float = 1e-3
    eval_mode_eigen: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.every, "ProbeConfig.every")
        check_positive_int(self.batch_size, "ProbeConfig.batch_size", minimum=2)
        check_positive_int(self.eig_iters, "ProbeConfig.eig_iters")
        if not self.multipliers or not all(
            isinstance(m, int | float) and not isinstance(m, bool) and 0 < m < math.inf
            for m in self.multipliers
        ):
            raise ValueError(f"ProbeConfig.multipliers must be numbers > 0, got {self.multipliers}")
        if not 0 <= self.eig_tol < math.inf:
            raise ValueError(f"ProbeConfig.eig_tol must be >= 0, got {self.eig_tol}")


def vgg_cnn(
    *, batchnorm: bool, widths: tuple[int, ...] = (8, 16), num_classes: int = 10
) -> nn.Sequential:
    """VGG-style CNN for ``(b, 1, 28, 28)`` inputs -> logits ``(b, num_classes)``.

    Args:
        batchnorm: insert ``BatchNorm2d`` between every convolution and its ReLU.
        widths: channels per stage (each stage halves the resolution; at most 4 stages).
        num_classes: output classes.
    """
    if not widths or len(widths) > 4:
        raise ValueError(f"widths must have 1 to 4 stages, got {widths}")
    for w in widths:
        check_positive_int(w, "widths")
    layers: list[nn.Module] = []
    c_in, side = 1, 28
    for w in widths:
        for i in range(2):
            layers.append(nn.Conv2d(c_in if i == 0 else w, w, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU())
        layers.append(nn.MaxPool2d(2))
        c_in, side = w, side // 2
    layers += [nn.Flatten(), nn.Linear(c_in * side * side, num_classes)]
    return nn.Sequential(*layers)


def mnist_tensors(split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` shipped MNIST images of ``split``: ``x (n, 1, 28, 28)`` standardised, ``y (n,)``."""
    x, y = data.load("mnist", split)
    if n is not None:
        x, y = x[:n], y[:n]
    return ((x.float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1), y


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy of ``model(x)`` against ``y`` and the batch accuracy (Trainer convention)."""
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), {"acc": (logits.argmax(-1) == y).float().mean()}


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000
) -> dict[str, float]:
    """Accuracy and mean cross-entropy on ``(x, y)`` in eval mode (mode restored)."""
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch):
        logits = model(x[i : i + batch])
        loss += float(nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum"))
        correct += int((logits.argmax(-1) == y[i : i + batch]).sum())
    model.train(was)
    return {"acc": correct / len(y), "loss": loss / len(y)}


def probe_metrics(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], lr: float, probe: ProbeConfig
) -> dict[str, float]:
    """Train-mode step probe and top eigenvalue (plus eval-mode eigenvalue) as flat floats.

    Keys: ``probe_loss``, ``probe_loss_min``, ``probe_loss_max``, ``probe_grad_norm``,
    ``probe_grad_change_max``, ``probe_beta``, ``lambda_max_train``, ``lambda_max_eval``.
    The model is left bit-identical (mode included).
    """
    was = model.training
    try:
        with torch.enable_grad():
            model.train()  # BN with batch statistics: the landscape SGD descends
            sp = step_probe(model, classification_loss, batch, [lr * m for m in probe.multipliers])
            out = sp.to_dict("probe_")
            kw = {"iters": probe.eig_iters, "tol": probe.eig_tol}
            out["lambda_max_train"] = hessian_top_eigenvalue(
                model, classification_loss, batch, **kw
            ).eigenvalue
            if probe.eval_mode_eigen:
                model.eval()  # running statistics: PyHessian's mode
                out["lambda_max_eval"] = hessian_top_eigenvalue(
                    model, classification_loss, batch, **kw
                ).eigenvalue
    finally:
        model.train(was)
    return out


def train_with_probes(
    *, batchnorm: bool, lr: float, seed: int, steps: int, batch_size: int,
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    probe: ProbeConfig | None, out_dir: str | Path, widths: tuple[int, ...] = (8, 16),
    momentum: float = 0.0, log_every: int = 10, progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train one network with SGD through the Trainer, probing every ``probe.every`` steps.

    Args:
        batchnorm: with or without BN layers.
        lr: SGD learning rate (also scales the probe's step sizes).
        seed: initialisation, data order and probe-batch seed.
        steps: optimizer steps.
        batch_size: training minibatch size.
        train: ``(x (n, 1, 28, 28), y (n,))`` training tensors.
        test: test tensors for the accuracy recorded at every probe.
        probe: what to measure (``None``: only test accuracy, at the end).
        out_dir: the run directory (``metrics.jsonl``, checkpoints, ``model.safetensors``).
        widths: CNN stage widths.
        momentum: SGD momentum (0: the step is exactly ``-lr g``, the probe's direction).
        log_every: train-loss logging interval (the training curve's resolution).
        progress: tqdm bar.

    Returns:
        ``{"batchnorm", "lr", "seed", "diverged", "train": [(step, loss)], "evals": [eval
        records: step, acc, loss, probe metrics], "final_acc"}``; a run whose loss became
        non-finite has ``diverged=True``, ``final_acc=nan`` and the records logged until then.
    """
    seed_everything(seed)
    model = vgg_cnn(batchnorm=batchnorm, widths=widths)
    g = torch.Generator().manual_seed(10_007 + seed)
    idx = torch.randperm(len(train[1]), generator=g)[: probe.batch_size if probe else 2]
    probe_batch = (train[0][idx], train[1][idx])

    def eval_fn(m: nn.Module) -> dict[str, float]:
        out = evaluate(m, *test)
        if probe is not None:
            out |= probe_metrics(m, probe_batch, lr, probe)
        return out

    out_dir = Path(out_dir)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
        train_data=TensorDataset(*train), loss_fn=classification_loss, eval_fn=eval_fn,
        out_dir=out_dir, progress=progress,
        config=TrainConfig(
            max_steps=steps, batch_size=batch_size, log_every=log_every, seed=seed, device="cpu",
            eval_every=probe.every if probe else None, keep_last=1, drop_last=True,
        ),
    )  # fmt: skip
    diverged = False
    try:
        trainer.fit()
    except FloatingPointError:
        diverged = True
    records = MetricsLog(out_dir / "metrics.jsonl").read()
    evals = [r for r in records if r["event"] == "eval"]
    acc = evals[-1]["acc"] if evals and not diverged else math.nan
    return {
        "batchnorm": batchnorm,
        "lr": lr,
        "seed": seed,
        "diverged": diverged,
        "train": [(r["step"], r["loss"]) for r in records if r["event"] == "train"],
        "evals": evals,
        "final_acc": acc,
    }


def lr_sweep(
    *, batchnorm: bool, lrs: tuple[float, ...], seed: int, steps: int, batch_size: int,
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    out_dir: str | Path, widths: tuple[int, ...] = (8, 16), momentum: float = 0.0,
) -> dict[float, float]:  # fmt: skip
    """Final test accuracy after ``steps`` SGD steps at each learning rate (NaN = diverged).

    "Trains" is then a threshold on this accuracy, chosen by the caller.
    """
    out = {}
    for lr in lrs:
        run = train_with_probes(
            batchnorm=batchnorm, lr=lr, seed=seed, steps=steps, batch_size=batch_size,
            train=train, test=test, probe=None, out_dir=Path(out_dir) / f"lr{lr:g}",
            widths=widths, momentum=momentum, log_every=max(1, steps // 5),
        )  # fmt: skip
        out[lr] = run["final_acc"]
    return out


def summarize(run: dict[str, Any]) -> dict[str, float]:
    """One run's numbers: final test ``acc`` and medians over its probe checkpoints.

    Keys: ``acc``, ``beta`` (effective beta), ``grad`` (max gradient change), ``range``
    (loss-range width ``max - min``), ``eig`` / ``eig_eval`` (top eigenvalue in train / eval
    mode). Non-finite checkpoint values are skipped; NaN when none is left.
    """

    def med(values: list[float]) -> float:
        vals = [v for v in values if math.isfinite(v)]
        return statistics.median(vals) if vals else math.nan

    ev = [e for e in run["evals"] if "probe_beta" in e]
    return {
        "acc": run["final_acc"],
        "beta": med([e["probe_beta"] for e in ev]),
        "grad": med([e["probe_grad_change_max"] for e in ev]),
        "range": med([e["probe_loss_max"] - e["probe_loss_min"] for e in ev]),
        "eig": med([e["lambda_max_train"] for e in ev]),
        "eig_eval": med([e.get("lambda_max_eval", math.nan) for e in ev]),
    }
