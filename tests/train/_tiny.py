"""A tiny shuffled classification problem shared by the trainer tests and the torchrun script."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


def make_data(n: int = 53, d: int = 6, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TensorDataset(x, y)


def make_model(d: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    logits = model(x)
    acc = (logits.argmax(-1) == y).float().mean()
    return nn.functional.cross_entropy(logits, y), {"acc": acc, "tokens": float(x.shape[0])}


def make_opt_sched(model: nn.Module, total: int = 40):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    return opt, sched


def make_trainer(out, max_steps: int, *, model_seed: int = 0, eval_fn=None, **config):
    """A Trainer on the tiny problem (Adam + LambdaLR, batch 8); ``config`` goes to TrainConfig."""
    from kexue.train import TrainConfig, Trainer

    model = make_model(seed=model_seed)
    opt, sched = make_opt_sched(model)
    return Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=loss_fn,
        scheduler=sched,
        eval_fn=eval_fn,
        config=TrainConfig(max_steps=max_steps, batch_size=8, **config),
        out_dir=out,
        progress=False,
    )
