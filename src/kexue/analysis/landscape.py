r"""First-order smoothness along the gradient: Santurkar et al.'s landscape probes.

Santurkar, Tsipras, Ilyas, Mądry, "How Does Batch Normalization Help Optimization?" (NeurIPS
2018), §3 and Fig. 4; Su Jianlin, 《BN究竟起了什么作用？一个闭门造车的分析》 (2019-10-11), whose
argument is the descent lemma: if :math:`\nabla\mathcal L` is :math:`L`-Lipschitz, a gradient
step with :math:`\eta < 2/L` decreases the loss, so a smaller :math:`L` admits larger steps.

At the current point :math:`\theta` with minibatch gradient :math:`g = \nabla\mathcal L(\theta)`,
for each step size :math:`\eta_i`:

.. math::
    \ell_i = \mathcal L(\theta - \eta_i g), \qquad
    \delta_i = \lVert \nabla\mathcal L(\theta - \eta_i g) - g \rVert_2, \qquad
    \beta = \max_i \frac{\delta_i}{\eta_i \lVert g \rVert_2}.

:math:`[\min_i \ell_i, \max_i \ell_i]` is the *loss range* (the band of Santurkar's Fig. 4a),
:math:`\delta` the *gradient predictiveness* (4b: how much the gradient changes along its own
step) and :math:`\beta` the *effective* :math:`\beta`-*smoothness* (4c: a local estimate of the
gradient's Lipschitz constant along :math:`g`). On a quadratic :math:`\tfrac12\theta^\top A\theta`,
:math:`\beta = \lVert Ag\rVert/\lVert g\rVert` for every :math:`\eta` (not
:math:`g^\top Ag/\lVert g\rVert^2`; they agree only when :math:`g` is an eigenvector).

All evaluations use the same ``batch`` and the model's current mode; BatchNorm running
statistics, parameters, gradients, RNG state and modes are left exactly as they were (see
:mod:`kexue.analysis._objective`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kexue.analysis._objective import LossFn, Objective, preserved_model_state

__all__ = ["StepProbe", "step_probe"]


@dataclass(frozen=True)
class StepProbe:
    r"""Landscape measurements along :math:`-g` at one point (``s`` = number of step sizes).

    Attributes:
        step_sizes: ``(s,)`` float64, the :math:`\eta_i` (> 0).
        losses: ``(s,)`` float64, :math:`\mathcal L(\theta - \eta_i g)`.
        grad_changes: ``(s,)`` float64, :math:`\lVert\nabla\mathcal L(\theta-\eta_i g) - g\rVert_2`.
        distances: ``(s,)`` float64, :math:`\eta_i\lVert g\rVert_2` (how far each point is).
        loss: :math:`\mathcal L(\theta)`.
        grad_norm: :math:`\lVert g\rVert_2`.
        beta: :math:`\max_i \delta_i / (\eta_i\lVert g\rVert)` (NaN when :math:`g = 0`).
    """

    step_sizes: torch.Tensor
    losses: torch.Tensor
    grad_changes: torch.Tensor
    distances: torch.Tensor
    loss: float
    grad_norm: float
    beta: float

    @property
    def loss_range(self) -> tuple[float, float]:
        """``(min_i l_i, max_i l_i)``: the loss band over the step sizes."""
        return float(self.losses.min()), float(self.losses.max())

    @property
    def max_grad_change(self) -> float:
        """``max_i delta_i``: the gradient-predictiveness summary (lower = more predictive)."""
        return float(self.grad_changes.max())

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalars for a metrics record: ``loss``, ``loss_min``, ``loss_max``, ``grad_norm``,
        ``grad_change_max``, ``beta`` (each key prefixed by ``prefix``)."""
        lo, hi = self.loss_range
        vals = {
            "loss": self.loss,
            "loss_min": lo,
            "loss_max": hi,
            "grad_norm": self.grad_norm,
            "grad_change_max": self.max_grad_change,
            "beta": self.beta,
        }
        return {prefix + k: v for k, v in vals.items()}


def _check_step_sizes(step_sizes: Any) -> torch.Tensor:
    if isinstance(step_sizes, torch.Tensor):
        if step_sizes.dim() != 1:
            raise ValueError(f"step_sizes must be 1-D, got shape {tuple(step_sizes.shape)}")
        etas = step_sizes.detach().to("cpu", torch.float64)
    else:
        if isinstance(step_sizes, str | bytes) or not isinstance(step_sizes, Sequence):
            raise TypeError(
                f"step_sizes must be a sequence of numbers or a 1-D tensor, got {type(step_sizes).__name__}"
            )
        for e in step_sizes:
            if isinstance(e, bool) or not isinstance(e, int | float):
                raise TypeError(f"step_sizes must contain numbers, got {e!r}")
        etas = torch.tensor([float(e) for e in step_sizes], dtype=torch.float64)
    if etas.numel() == 0:
        raise ValueError("step_sizes must not be empty")
    if not bool(torch.isfinite(etas).all()) or not bool((etas > 0).all()):
        raise ValueError(f"step_sizes must be finite and > 0, got {etas.tolist()}")
    return etas


def _norm(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in ts]))


def step_probe(
    model: nn.Module, loss_fn: LossFn, batch: Any, step_sizes: Sequence[float] | torch.Tensor
) -> StepProbe:
    r"""Loss range, gradient predictiveness and effective :math:`\beta` along :math:`-g`.

    Costs ``1 + s`` forward/backward passes on ``batch``. The model is left bit-identical.

    Args:
        model: the network at the point :math:`\theta` (its trainable parameters).
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)``, a scalar to minimise.
        batch: the minibatch used for every evaluation of this probe.
        step_sizes: ``(s,)`` step sizes :math:`\eta_i > 0` (e.g. multiples of the training
            learning rate).

    Returns:
        A :class:`StepProbe`.

    Raises:
        TypeError: ``model`` is not a module, ``loss_fn`` not callable, ``step_sizes`` not numbers.
        ValueError: empty/non-finite/non-positive ``step_sizes``, no trainable parameter, or a
            non-scalar loss.
    """
    etas = _check_step_sizes(step_sizes)
    obj = Objective(model, loss_fn, batch)
    with preserved_model_state(model), obj.frozen_statistics():
        loss0, g = obj.loss_and_grad()
        g = [t.detach() for t in g]
        g_norm = float(_norm(g))
        losses, changes = [], []
        for eta in etas.tolist():
            # theta - eta g, as fresh leaves: the model's parameters are never written
            moved = [(p.detach() - eta * gi).requires_grad_() for p, gi in zip(obj.params, g)]
            loss_i, g_i = obj.loss_and_grad(moved)
            losses.append(float(loss_i.detach()))
            changes.append(float(_norm([a.detach() - b for a, b in zip(g_i, g)])))
    step_sizes_t = etas
    grad_changes = torch.tensor(changes, dtype=torch.float64)
    distances = step_sizes_t * g_norm
    beta = float((grad_changes / distances).max()) if g_norm > 0 else math.nan
    return StepProbe(
        step_sizes=step_sizes_t,
        losses=torch.tensor(losses, dtype=torch.float64),
        grad_changes=grad_changes,
        distances=distances,
        loss=float(loss0.detach()),
        grad_norm=g_norm,
        beta=beta,
    )
