"""Small models shared by the analysis tests (no import of the code under test)."""

from __future__ import annotations

import torch
from torch import nn


class Quadratic(nn.Module):
    """``L(theta) = 1/2 theta^T A theta + c^T theta`` with theta split over two parameters."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        n = theta.numel()
        k = n // 2
        self.w = nn.Parameter(theta[:k].clone().reshape(k, 1))
        self.b = nn.Parameter(theta[k:].clone())

    def flat(self) -> torch.Tensor:
        return torch.cat([self.w.reshape(-1), self.b])


def quadratic_loss(model: Quadratic, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    A, c = batch
    t = model.flat()
    return 0.5 * t @ A @ t + c @ t


def cnn(bn: bool, dropout: float = 0.0) -> nn.Sequential:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=not bn)] + (
            [nn.BatchNorm2d(o)] if bn else []
        ) + [nn.ReLU()]  # fmt: skip

    layers = [*block(1, 4), nn.MaxPool2d(2), *block(4, 6), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(6 * 4 * 4, 5))
    return nn.Sequential(*layers)


def mlp(bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(6, 5)]
    if bn:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 3)]
    return nn.Sequential(*layers)


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    return loss, {"acc": (logits.argmax(-1) == y).float().mean()}


def image_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def vector_batch(n: int = 12, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def random_symmetric(n: int, seed: int, indefinite: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.linspace(0.5, 3.0, n, dtype=torch.float64)
    ev[-1] = 5.0  # a clear spectral gap: power iteration converges geometrically (ratio 0.6)
    if indefinite:
        ev[0] = -8.0  # dominant in magnitude but not the largest
    return q @ torch.diag(ev) @ q.T
