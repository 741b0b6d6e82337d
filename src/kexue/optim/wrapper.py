"""A base class for optimizers that wrap another optimizer and share its parameter groups.

:class:`OptimizerWrapper` subclasses :class:`torch.optim.Optimizer` (LR schedulers and
``torch.amp.GradScaler`` check ``isinstance``) without calling its constructor: ``param_groups``
and ``defaults`` are *the inner optimizer's objects*, so a scheduler that writes ``group["lr"]``
changes the inner learning rate, and ``add_param_group`` reaches the inner optimizer.

``state_dict()`` is the inner optimizer's state dict (``"state"`` and ``"param_groups"``, the
layout every PyTorch tool expects) plus one extra top-level key per wrapper, so wrappers nest:
``Lookahead(Lazy(Adam))`` saves ``{"state", "param_groups", "lazy", "lookahead"}``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch.optim import Optimizer


class OptimizerWrapper(Optimizer):
    """Base class: an optimizer that delegates to ``optimizer`` and adds behaviour around ``step``.

    Subclasses set :attr:`state_key` (the extra key in the state dict) and implement
    :meth:`step`, :meth:`_extra_state` and :meth:`_load_extra_state`; they may override
    :meth:`_on_new_group` to initialise per-parameter data for groups added later.

    Args:
        optimizer: the inner optimizer (any ``torch.optim.Optimizer``, including another wrapper).

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
    """

    state_key: str = "wrapper"

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        # The bookkeeping Optimizer.__init__ would create (hooks, profiling name).
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True

    # -- shared objects ------------------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The inner optimizer's parameter groups (the same list object)."""
        return self.optimizer.param_groups

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's defaults."""
        return self.optimizer.defaults

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._patch_step_function()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._extra_repr()}, optimizer={self.optimizer!r})"

    def _extra_repr(self) -> str:
        return ""

    # -- delegation ----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients (delegates to the inner optimizer).

        Args:
            set_to_none: set ``.grad`` to ``None`` instead of zeroing it.
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the inner optimizer (and initialise wrapper data for it).

        Args:
            param_group: as for :meth:`torch.optim.Optimizer.add_param_group`.
        """
        self.optimizer.add_param_group(param_group)
        self._on_new_group(self.param_groups[-1])

    def _on_new_group(self, group: dict[str, Any]) -> None:
        """Hook for subclasses: called for every group added after construction."""

    def _params(self) -> list[torch.Tensor]:
        """All parameters in group order (the order state-dict indices refer to)."""
        return [p for group in self.param_groups for p in group["params"]]

    # -- state dict ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Inner state dict (``"state"``, ``"param_groups"``) plus ``{state_key: extra}``.

        Returns:
            A dict that ``torch.save`` and ``load_state_dict`` accept.
        """
        sd = self.optimizer.state_dict()
        sd[self.state_key] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore inner state and this wrapper's extra state.

        Args:
            state_dict: as returned by :meth:`state_dict`.

        Raises:
            ValueError: the wrapper's key is missing (a state dict from another optimizer).
        """
        if self.state_key not in state_dict:
            raise ValueError(
                f"state_dict has no {self.state_key!r} entry; it was not saved by "
                f"{type(self).__name__} (keys: {sorted(state_dict)})"
            )
        inner = dict(state_dict)
        extra = inner.pop(self.state_key)
        self.optimizer.load_state_dict(inner)
        self._load_extra_state(extra)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass
