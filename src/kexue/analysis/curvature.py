r"""Curvature of the minibatch loss: Hessian-vector products, top eigenvalue, Hutchinson trace.

The curvature camp's measurements (Yao, Gholami, Keutzer, Mahoney, "PyHessian: Neural Networks
Through the Lens of the Hessian", 2020), computed on the same model, loss and batch as the
first-order probes of :mod:`.landscape`. With :math:`H = \nabla^2\mathcal L(\theta)` over the
trainable parameters:

* **Hessian-vector product** without forming :math:`H`:
  :math:`Hv = \nabla_\theta\langle\nabla_\theta\mathcal L, v\rangle` (Pearlmutter).
  ``method="autograd"`` builds the gradient's graph once (``create_graph=True``) and runs one
  double backward per product on the retained graph; ``method="func"`` (reference) computes
  :math:`\partial_t \nabla\mathcal L(\theta + t v)|_{t=0}` with ``torch.func.jvp`` over
  ``torch.func.grad`` (forward-over-reverse), recomputing forward and backward per product but
  holding no graph between products. On the experiment's CNN (CPU) the retained-graph double
  backward is the faster of the two per product (``benchmarks/analysis.py`` prints both), so it
  is the default; it is the same algorithm PyHessian uses, so equal-iteration timings are close.
* **Top eigenvalue** by power iteration: :math:`v_{k+1} = Hv_k/\lVert Hv_k\rVert`,
  :math:`\lambda_k = v_k^\top H v_k`, stopped when
  :math:`|\lambda_k-\lambda_{k-1}| < \mathrm{tol}\,|\lambda_{k-1}|`. Power iteration finds the
  eigenvalue of largest *magnitude*; if that is negative (:math:`\mu<0`), a second power
  iteration on :math:`H-\mu I` (spectrum in :math:`[0, \lambda_{\max}-\mu]`) returns
  :math:`\lambda_{\max}`. :math:`\lambda_{\max}` is the local gradient-Lipschitz constant along
  its eigenvector, the :math:`L` of Su's :math:`\eta < 2/L`.
* **Trace** by Hutchinson: :math:`\operatorname{tr}H = \mathbb E[z^\top Hz]` for Rademacher
  :math:`z`, estimated by the mean of ``samples`` draws with standard error
  :math:`\mathrm{sd}(z^\top Hz)/\sqrt{\text{samples}}`.

BatchNorm: the model is used in its current mode (train: batch statistics; eval: running
statistics, which is what PyHessian measures because it calls ``model.eval()``), running
statistics are never updated, and the model is left bit-identical (:mod:`._objective`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kexue.analysis._objective import LossFn, Objective, preserved_model_state
from kexue.core.checks import check_positive_int

__all__ = [
    "HessianEigen",
    "HessianTrace",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hessian_vector_product",
]

METHODS = ("autograd", "func")
Vec = list[torch.Tensor]


@dataclass(frozen=True)
class HessianEigen:
    """Result of :func:`hessian_top_eigenvalue`.

    Attributes:
        eigenvalue: the estimate of :math:`\\lambda_{\\max}(H)`.
        iterations: Hessian-vector products used (both passes when a shift was needed).
        converged: the relative-change criterion was met within ``iters`` (in every pass).
        eigenvector: unit-norm estimate, one tensor per trainable parameter (same shapes).
    """

    eigenvalue: float
    iterations: int
    converged: bool
    eigenvector: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class HessianTrace:
    """Result of :func:`hessian_trace`: ``value`` ± ``stderr`` from ``samples`` Rademacher draws."""

    value: float
    stderr: float
    samples: int


def _dot(a: Vec, b: Vec) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return str(method)


def _hvp_operator(obj: Objective, method: str) -> Callable[[Vec], Vec]:
    """``v -> Hv`` at the model's current parameters (call inside the state guards)."""
    params = obj.params
    if method == "autograd":
        _, grads = obj.loss_and_grad(create_graph=True)
        live = [i for i, g in enumerate(grads) if g.requires_grad]  # others: zero Hessian rows

        def hvp(v: Vec) -> Vec:
            if not live:
                return [torch.zeros_like(p) for p in params]
            hv = torch.autograd.grad(
                [grads[i] for i in live],
                params,
                grad_outputs=[v[i] for i in live],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            return [h.detach() for h in hv]

        return hvp

    obj.loss_and_grad()  # validates the loss (scalar, depends on the parameters) before tracing

    def f(*ps: torch.Tensor) -> torch.Tensor:
        return obj.loss(list(ps))

    grad_f = torch.func.grad(f, argnums=tuple(range(len(params))))
    primals = tuple(p.detach() for p in params)

    def hvp_func(v: Vec) -> Vec:
        _, hv = torch.func.jvp(grad_f, primals, tuple(v))
        return [h.detach() for h in hv]

    return hvp_func


def _check_vector(vector: Any, params: Vec, name: str = "vector") -> Vec:
    if isinstance(vector, torch.Tensor) or not isinstance(vector, Sequence):
        raise TypeError(f"{name} must be a sequence of tensors, one per trainable parameter")
    if len(vector) != len(params):
        raise ValueError(
            f"{name} must have {len(params)} tensors (one per trainable parameter), got {len(vector)}"
        )
    out = []
    for i, (v, p) in enumerate(zip(vector, params)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(v).__name__}")
        if v.shape != p.shape:
            raise ValueError(f"{name}[{i}] must have shape {tuple(p.shape)}, got {tuple(v.shape)}")
        out.append(v.detach().to(p.device, p.dtype))
    return out


def hessian_vector_product(
    model: nn.Module, loss_fn: LossFn, batch: Any, vector: Sequence[torch.Tensor], *,
    method: str = "autograd",
) -> list[torch.Tensor]:  # fmt: skip
    r""":math:`Hv` for the minibatch loss at the model's parameters.

    Args:
        model: the network; trainable parameters in ``named_parameters()`` order.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)``.
        batch: the minibatch.
        vector: :math:`v`, one tensor per trainable parameter (same shapes).
        method: ``"autograd"`` (double backward) or ``"func"`` (``torch.func`` jvp over grad).

    Returns:
        :math:`Hv`, one tensor per trainable parameter.

    Raises:
        TypeError/ValueError: bad ``vector``, ``method``, loss or model (see :func:`step_probe`).
    """
    method = _check_method(method)
    obj = Objective(model, loss_fn, batch)
    v = _check_vector(vector, obj.params)
    with preserved_model_state(model), obj.frozen_statistics():
        return _hvp_operator(obj, method)(v)


def _random_unit(params: Vec, generator: torch.Generator) -> Vec:
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    n = math.sqrt(_dot(v, v))
    return [(t / n).to(p.device, p.dtype) for t, p in zip(v, params)]


def _power_iteration(
    hvp: Callable[[Vec], Vec], v: Vec, iters: int, tol: float, shift: float = 0.0
) -> tuple[float, Vec, int, bool]:
    """Power iteration on ``H - shift I`` from unit ``v``: (Rayleigh quotient, v, products, converged)."""
    lam: float | None = None
    for k in range(1, iters + 1):
        hv = hvp(v)
        if shift:
            hv = [a - shift * b for a, b in zip(hv, v)]
        new = _dot(v, hv)  # Rayleigh quotient v^T (H - shift I) v, ||v|| = 1
        norm = math.sqrt(_dot(hv, hv))
        if norm == 0.0 or not math.isfinite(norm):
            return new, v, k, norm == 0.0
        v = [a / norm for a in hv]
        if lam is not None and abs(new - lam) <= tol * abs(lam):
            return new, v, k, True
        lam = new
    assert lam is not None
    return lam, v, iters, False


def hessian_top_eigenvalue(
    model: nn.Module, loss_fn: LossFn, batch: Any, *, iters: int = 100, tol: float = 1e-4,
    method: str = "autograd", generator: torch.Generator | None = None,
    init: Sequence[torch.Tensor] | None = None,
) -> HessianEigen:  # fmt: skip
    r"""Largest eigenvalue :math:`\lambda_{\max}` of the minibatch Hessian by power iteration.

    Args:
        model: the network (current mode: train = batch-statistics BN, eval = running stats).
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)``.
        batch: the minibatch.
        iters: maximum Hessian-vector products per power-iteration pass (>= 1).
        tol: stop when :math:`|\lambda_k - \lambda_{k-1}| \le \mathrm{tol}\,|\lambda_{k-1}|`
            (0: always run ``iters`` products, for timing at equal iterations).
        method: ``"autograd"`` (fast: double backward on a retained graph) or ``"func"``.
        generator: CPU generator for the random start vector (default: seeded with 0, so the
            estimate is deterministic and the global RNG is not consumed).
        init: optional start vector, one tensor per trainable parameter (normalised here; e.g.
            to start from the same vector as another implementation). Overrides ``generator``
            for the first pass.

    Returns:
        A :class:`HessianEigen`.

    Raises:
        TypeError/ValueError: bad ``iters``, ``tol``, ``method``, model or loss.
    """
    check_positive_int(iters, "iters")
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < math.inf:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    method = _check_method(method)
    obj = Objective(model, loss_fn, batch)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if init is None:
        v0 = _random_unit(obj.params, generator)
    else:
        v0 = _check_vector(init, obj.params, "init")
        norm = math.sqrt(_dot(v0, v0))
        if not 0 < norm < math.inf:
            raise ValueError(f"init must have a finite, non-zero norm, got {norm}")
        v0 = [t / norm for t in v0]
    with preserved_model_state(model), obj.frozen_statistics():
        hvp = _hvp_operator(obj, method)
        mu, v, n, ok = _power_iteration(hvp, v0, iters, tol)
        if mu < 0:  # dominant eigenvalue is negative: shift so lambda_max becomes dominant
            top, v, n2, ok2 = _power_iteration(
                hvp, _random_unit(obj.params, generator), iters, tol, shift=mu
            )
            mu, n, ok = top + mu, n + n2, ok and ok2
    return HessianEigen(eigenvalue=mu, iterations=n, converged=ok, eigenvector=tuple(v))


def hessian_trace(
    model: nn.Module, loss_fn: LossFn, batch: Any, *, samples: int = 100,
    method: str = "autograd", generator: torch.Generator | None = None,
) -> HessianTrace:  # fmt: skip
    r"""Hutchinson estimate of :math:`\operatorname{tr}H` with its standard error.

    Args:
        model: the network.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)``.
        batch: the minibatch.
        samples: number of Rademacher vectors :math:`z` (>= 2 for a standard error).
        method: ``"autograd"`` or ``"func"``.
        generator: CPU generator for :math:`z` (default: seeded with 0).

    Returns:
        A :class:`HessianTrace`: mean of :math:`z^\top Hz` and
        :math:`\mathrm{sd}/\sqrt{\text{samples}}` (sample sd, ``ddof=1``).

    Raises:
        TypeError/ValueError: bad ``samples``, ``method``, model or loss.
    """
    check_positive_int(samples, "samples", minimum=2)
    method = _check_method(method)
    obj = Objective(model, loss_fn, batch)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    draws = []
    with preserved_model_state(model), obj.frozen_statistics():
        hvp = _hvp_operator(obj, method)
        for _ in range(samples):
            z = [
                (torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.device, p.dtype)
                for p in obj.params
            ]
            draws.append(_dot(z, hvp(z)))
    t = torch.tensor(draws, dtype=torch.float64)
    return HessianTrace(
        value=float(t.mean()), stderr=float(t.std() / math.sqrt(samples)), samples=samples
    )
