r"""Lookahead: k steps forward, 1 step back, around any optimizer.

Zhang, Lucas, Hinton, Ba, "Lookahead Optimizer: k steps forward, 1 step back" (NeurIPS 2019);
Su Jianlin, 《Keras实现两个优化器：Lookahead和LazyOptimizer》 (kexue.fm, 2019-07-30).

Slow weights :math:`\phi`, fast weights :math:`\theta` (the model's parameters), inner optimizer
:math:`A`, period :math:`k`, slow step :math:`\alpha \in (0, 1]`:

.. math::

    \theta_{t,0} = \phi_{t-1},\qquad
    \theta_{t,i} = \theta_{t,i-1} + A(L, \theta_{t,i-1}),\ i = 1..k,\qquad
    \phi_t = \phi_{t-1} + \alpha\,(\theta_{t,k} - \phi_{t-1}).

:math:`\phi_0` is the parameters' value when the wrapper is built; :math:`\alpha = 1` is the
inner optimizer exactly. The inner state (moments, step counter) is kept across synchronisations
(``pullback="none"``, Su's and the authors' default); ``"reset"`` zeroes SGD-style
``momentum_buffer`` at each synchronisation and ``"pullback"`` interpolates it like the weights,
:math:`b \leftarrow b_{\text{slow}} + \alpha (b - b_{\text{slow}})`, :math:`b_{\text{slow}}
\leftarrow b` (authors' code; :math:`b_{\text{slow}}` starts at zero).

Fixed relative to the originals (design note 04 §4, §8): the slow weights and the step counter
are part of ``state_dict()`` (Su's Keras code and several PyTorch ports lose them on resume);
the counter advances once per *successful* inner step (``GradScaler`` skips ``step()`` on
inf/NaN gradients, so skipped steps do not count).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as _torch_optimizer

from kexue.core.checks import check_positive_int
from kexue.optim.wrapper import OptimizerWrapper

PULLBACK_MODES = ("none", "reset", "pullback")


class Lookahead(OptimizerWrapper):
    """Lookahead wrapper (slow weights synchronised every ``k`` inner steps).

    The model's parameters always hold the *fast* weights; use :meth:`slow_weights` to evaluate
    the slow ones. The wrapper is a ``torch.optim.Optimizer`` sharing ``param_groups`` with the
    inner optimizer, so LR schedulers, ``GradScaler`` and ``DDP`` (slow weights are updated
    deterministically on every replica, no communication) work unchanged.

    Args:
        optimizer: inner optimizer (Adam, SGD, :class:`~kexue.optim.Lazy`, ...).
        k: synchronisation period, ``k >= 1``.
        alpha: slow step size in ``(0, 1]``.
        pullback: ``"none"`` | ``"reset"`` | ``"pullback"``: what happens to the inner
            ``momentum_buffer`` at synchronisation (the last two need an optimizer with a
            ``momentum`` hyper-parameter, e.g. SGD or RMSprop).

    Raises:
        TypeError: ``optimizer`` is not an optimizer, ``k`` not an int.
        ValueError: ``k < 1``, ``alpha`` outside ``(0, 1]``, unknown ``pullback`` or a pullback
            mode for an optimizer without momentum buffers.

    Example:
        >>> opt = Lookahead(torch.optim.Adam(model.parameters(), 1e-3), k=5, alpha=0.5)
        >>> loss.backward(); opt.step(); opt.zero_grad()
        >>> with opt.slow_weights():
        ...     evaluate(model)
    """

    state_key = "lookahead"

    def __init__(
        self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5, pullback: str = "none"
    ) -> None:
        super().__init__(optimizer)
        self.k = check_positive_int(k, "k")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise TypeError(f"alpha must be a float, got {type(alpha).__name__}")
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        if pullback not in PULLBACK_MODES:
            raise ValueError(f"pullback must be one of {PULLBACK_MODES}, got {pullback!r}")
        if pullback != "none" and "momentum" not in self.defaults:
            raise ValueError(
                f"pullback={pullback!r} acts on momentum buffers, but {type(optimizer).__name__} "
                "has no 'momentum' hyper-parameter (use SGD/RMSprop, or pullback='none')"
            )
        self.pullback = pullback
        self.step_count = 0  # successful inner steps since construction (or the loaded value)
        self._swapped: list[torch.Tensor] | None = None  # fast weights while slow ones are in
        self.state: defaultdict[torch.Tensor, dict[str, torch.Tensor]] = defaultdict(dict)
        for group in self.param_groups:
            self._on_new_group(group)

    def _extra_repr(self) -> str:
        return f"k={self.k}, alpha={self.alpha}, pullback={self.pullback!r}"

    def _on_new_group(self, group: dict[str, Any]) -> None:
        with torch.no_grad():
            for p in group["params"]:
                st = self.state[p]
                if "slow_param" not in st:
                    st["slow_param"] = p.detach().clone()  # phi_0 = theta at wrap time
                if self.pullback == "pullback" and "slow_momentum" not in st:
                    st["slow_momentum"] = torch.zeros_like(p)

    # -- step ----------------------------------------------------------------------------------
    # ``Optimizer`` wraps every subclass's ``step`` in a profiler ``record_function`` plus hook
    # dispatch; the inner optimizer's ``step`` already has that wrapper, and a second one on this
    # thin wrapper costs a few percent of an Adam step on a small MLP (issue 15). So ``step`` is
    # marked as already hooked, and takes the wrapped path only when it is needed: step hooks
    # registered on this optimizer or globally, or the autograd profiler running.
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """One inner step; every ``k``-th call also synchronises slow and fast weights.

        Args:
            closure: passed to the inner optimizer's ``step``.

        Returns:
            The inner optimizer's return value (the closure's loss, if any).

        Raises:
            RuntimeError: called inside :meth:`slow_weights`.
        """
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
            or getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
            or torch.autograd._profiler_enabled()
        ):
            return self._hooked_step(closure)
        return self._step(closure)

    step.hooked = True  # type: ignore[attr-defined]  # Optimizer._patch_step_function: skip

    def _step(self, closure: Callable[[], float] | None = None) -> Any:
        if self._swapped is not None:
            raise RuntimeError("step() called inside slow_weights(); leave the context first")
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self.step_count += 1
        if self.step_count % self.k == 0:
            self.synchronize()
        return loss

    _hooked_step = Optimizer.profile_hook_step(_step)

    @torch.no_grad()
    def synchronize(self) -> None:
        r"""Do the slow update now: :math:`\phi \leftarrow \phi + \alpha(\theta - \phi)`,
        :math:`\theta \leftarrow \phi` (and the momentum rule of ``pullback``).

        Called by :meth:`step` every ``k`` steps; call it yourself to end training on slow
        weights. Two multi-tensor kernels over all parameters (``_foreach_lerp_``,
        ``_foreach_copy_``; the momentum rules likewise); the steps in between do nothing
        per parameter.
        """
        params = self._params()
        slow = [self.state[p]["slow_param"] for p in params]
        torch._foreach_lerp_(slow, params, self.alpha)  # phi <- phi + alpha (theta - phi)
        torch._foreach_copy_(params, slow)  # theta <- phi
        if self.pullback == "none":
            return
        inner_state = self.optimizer.state
        bufs = []
        for p in params:  # the inner optimizer may create or replace buffers: look them up
            st = inner_state[p]
            if st.get("momentum_buffer") is None:
                st["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(st["momentum_buffer"])
        if self.pullback == "reset":
            torch._foreach_zero_(bufs)
            return
        slow_bufs = [self.state[p]["slow_momentum"] for p in params]
        torch._foreach_lerp_(slow_bufs, bufs, self.alpha)  # b_slow <- b_slow + alpha (b - b_slow)
        torch._foreach_copy_(bufs, slow_bufs)

    # -- evaluation on slow weights ------------------------------------------------------------
    @contextmanager
    def slow_weights(self) -> Iterator[Lookahead]:
        """Temporarily load the slow weights into the model (fast weights restored on exit).

        Yields:
            This optimizer.

        Raises:
            RuntimeError: nested use.
        """
        if self._swapped is not None:
            raise RuntimeError("slow_weights() is already active")
        params = self._params()
        with torch.no_grad():
            self._swapped = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, [self.state[p]["slow_param"] for p in params])
        try:
            yield self
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, self._swapped)
            self._swapped = None

    # -- state dict ----------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        if self._swapped is not None:
            raise RuntimeError(
                "state_dict() inside slow_weights(): the model holds slow weights now; "
                "save outside the context so the checkpoint records the fast weights"
            )
        params = self._params()
        out: dict[str, Any] = {
            "k": self.k,
            "alpha": self.alpha,
            "pullback": self.pullback,
            "step": self.step_count,
            "slow_param": {i: self.state[p]["slow_param"].clone() for i, p in enumerate(params)},
        }
        if self.pullback == "pullback":
            out["slow_momentum"] = {
                i: self.state[p]["slow_momentum"].clone() for i, p in enumerate(params)
            }
        return out

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        params = self._params()
        slow = extra["slow_param"]
        if len(slow) != len(params):
            raise ValueError(
                f"state_dict holds slow weights for {len(slow)} parameters, optimizer has "
                f"{len(params)}"
            )
        self.k, self.alpha = int(extra["k"]), float(extra["alpha"])
        self.pullback, self.step_count = str(extra["pullback"]), int(extra["step"])
        self.state = defaultdict(dict)
        for i, p in enumerate(params):
            for key in ("slow_param", "slow_momentum"):
                if key in extra:
                    t = extra[key][i]
                    if t.shape != p.shape:
                        raise ValueError(
                            f"state_dict[{self.state_key!r}][{key!r}][{i}] has shape "
                            f"{tuple(t.shape)}, parameter has {tuple(p.shape)}"
                        )
                    self.state[p][key] = t.to(device=p.device, dtype=p.dtype).clone()
        self._on_new_group({"params": params})  # fills slow_momentum if the mode needs it
