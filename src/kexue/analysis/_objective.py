r"""The objective :math:`\theta \mapsto \mathcal L(\theta; B)` every probe evaluates, and the guard
that leaves the model exactly as it was.

Conventions shared by :mod:`.landscape` and :mod:`.curvature`:

* ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)`` (the Trainer's convention); ``loss`` is
  a scalar floating tensor. Only parameters with ``requires_grad`` are probed (the others are
  held fixed), in ``named_parameters()`` order.
* The model is evaluated **in the mode it is in**. In train mode a BatchNorm layer normalises with
  the statistics of ``batch`` (the function the optimizer sees, Santurkar et al.); in eval mode it
  uses its running statistics (PyHessian's choice: its ``hessian`` class calls ``model.eval()``).
  Either way the running statistics are **never updated** by a probe: every ``_BatchNorm`` module
  has ``track_running_stats`` switched off for the duration (in train mode PyTorch then normalises
  with batch statistics and skips the update; in eval mode nothing changes), and all buffers are
  restored afterwards as a second line of defence for other stateful modules.
* Every evaluation inside one probe starts from the same global RNG state, so a model with dropout
  is one deterministic function of its parameters during the probe; the caller's RNG state is
  restored afterwards.
* Displaced points :math:`\theta - \eta g` are evaluated with :func:`torch.func.functional_call`,
  so parameters are never written to; gradients come from :func:`torch.autograd.grad`, so
  ``.grad`` fields are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

LossFn = Callable[[nn.Module, Any], Any]

__all__ = ["LossFn", "Objective", "preserved_model_state"]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[None]:
    """Run a block and leave ``model`` bit-identical afterwards, even on error.

    Restores: parameter values, buffers (BatchNorm running statistics and ``num_batches_tracked``
    included), ``.grad`` tensors (object and values, or ``None``), every submodule's
    ``training`` flag, BatchNorm ``track_running_stats`` flags and the global torch RNG state
    (CPU, and CUDA when initialised). Tensors are written back only where they changed, so
    version counters of untouched tensors (and autograd graphs that saved them) stay valid.

    Args:
        model: any ``nn.Module``.
    """
    params = [(p, p.detach().clone()) for p in model.parameters()]
    grads = [(p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p, _ in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    tracks = [(m, m.track_running_stats) for m in model.modules() if _is_bn(m)]
    rng = _rng_state()
    try:
        yield
    finally:
        with torch.no_grad():
            for t, saved in params + buffers:
                if not torch.equal(t, saved):  # NaN != NaN: a NaN entry is rewritten, harmlessly
                    t.copy_(saved)
            for p, g, saved in grads:
                if g is not None and not torch.equal(g, saved):
                    g.copy_(saved)
                p.grad = g
        for m, flag in modes:
            m.training = flag
        for m, flag in tracks:
            m.track_running_stats = flag
        _set_rng_state(rng)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: lets ``functional_call`` substitute parameters
    of ``model`` while a user ``loss_fn`` calls ``model(...)`` itself."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


class Objective:
    r"""``theta -> L(theta; batch)`` over the trainable parameters of ``model``.

    Use it inside :func:`preserved_model_state` and :meth:`frozen_statistics`; the public probe
    functions do both.

    Args:
        model: the network; its trainable parameters are the variables :math:`\theta`.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)``.
        batch: passed unchanged to ``loss_fn`` (the same minibatch for every evaluation).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``loss_fn`` is not callable.
        ValueError: no parameter of ``model`` requires grad.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable: loss_fn(model, batch) -> loss")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no parameters that require grad: nothing to probe")
        self.model = model
        self.batch = batch
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self._wrapper = _LossModule(model, loss_fn)
        self._rng = _rng_state()

    @contextmanager
    def frozen_statistics(self) -> Iterator[None]:
        """BatchNorm layers stop updating running statistics (mode unchanged; see module doc)."""
        bns = [m for m in self.model.modules() if _is_bn(m)]
        old = [m.track_running_stats for m in bns]
        for m in bns:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m, flag in zip(bns, old, strict=True):
                m.track_running_stats = flag

    def loss(self, params: list[torch.Tensor] | None = None) -> torch.Tensor:
        r"""The scalar loss at ``params`` (default: the model's own parameters).

        Args:
            params: tensors shaped like :attr:`params` substituted via ``functional_call``.

        Returns:
            The 0-d loss tensor (differentiable w.r.t. ``params`` or the model's parameters).

        Raises:
            ValueError: ``loss_fn`` did not return a scalar floating tensor.
        """
        _set_rng_state(self._rng)  # same dropout masks for every evaluation of one probe
        if params is None:
            out = self._wrapper(self.batch)
        else:
            sub = {f"model.{n}": t for n, t in zip(self.names, params, strict=True)}
            out = functional_call(self._wrapper, sub, (self.batch,))
        loss = out[0] if isinstance(out, tuple) else out
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar loss (or (loss, metrics)), got {shape}")
        if not loss.is_floating_point():
            raise ValueError(f"loss_fn must return a floating-point loss, got {loss.dtype}")
        return loss.reshape(())

    def loss_and_grad(
        self, params: list[torch.Tensor] | None = None, create_graph: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        r"""``(L(theta), grad L(theta))`` at ``params`` (default: the model's parameters).

        Args:
            params: leaf tensors with ``requires_grad`` (or ``None``).
            create_graph: keep the graph of the gradient (for Hessian-vector products).

        Returns:
            The loss (0-d) and one gradient tensor per parameter (same shapes). Parameters the
            loss does not depend on get zero gradients.
        """
        loss = self.loss(params)
        if params is None and not bool(torch.isfinite(loss.detach())):
            # at the model's own point a NaN/inf is bad input (a NaN batch or weights), not a
            # measurement: refuse before it becomes a probe's or an eigenvalue's result
            raise ValueError(
                f"the loss at the model's parameters is {float(loss.detach())} (not finite): "
                "check the batch and the weights for NaN/inf"
            )
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on any parameter that requires grad")
        wrt = self.params if params is None else params
        grads = torch.autograd.grad(
            loss, wrt, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
        return loss, list(grads)
