r"""Lazy optimizer: embedding rows absent from the batch are not moved by momentum.

Su Jianlin, 《Keras实现两个优化器：Lookahead和LazyOptimizer》 (kexue.fm, 2019-07-30); TF
``LazyAdamOptimizer``; ``torch.optim.SparseAdam``.

For a listed table :math:`W \in \mathbb{R}^{v\times d}` with gradient :math:`G`, the row flag is
:math:`f_r = \mathbb{1}[\exists j: G_{rj} \neq 0]` (dense gradient) or "row :math:`r` is among
the indices" (sparse gradient). With any inner optimizer :math:`A` producing
:math:`W' = A(W, G)`, the lazy update is

.. math::

    W_r \leftarrow f_r\, W'_r + (1 - f_r)\, W_r,

i.e. the learning rate is :math:`\eta f_r` per row, exactly Su's construction. Optimizer state:

* ``moments="freeze"`` (default; TF LazyAdam / SparseAdam): state tensors shaped like
  :math:`W` (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ...) also keep their old rows
  where :math:`f_r = 0`; the step counter (bias correction) is the global one.
* ``moments="decay"`` (Su's article): the inner state is updated as if :math:`G_r = 0`, so the
  moments of unused rows decay, while their weights stay put.

Unused rows get no weight decay either (they are restored). Non-listed parameters use the inner
optimizer unchanged. A *fast path* for ``torch.optim.Adam``/``AdamW``
(:mod:`kexue.optim.rowwise`) gathers, updates and scatters only the touched rows (with
``"decay"`` it also scales the two moment tables, two passes instead of Adam's full step); it is
chosen automatically and is equivalent to the generic path (to float rounding). The generic path works
for every optimizer: it lets the inner optimizer update the whole table and copies the unused
rows back (sparse gradients are densified for it, since most optimizers reject them).

Fixed relative to Su's Keras code (design note 04 §4): the step counter advances once per
``step()`` (the original advanced it 1 + #embeddings times), and the whole state is saved.
Kept: a used row whose gradient is exactly zero (e.g. masked padding) counts as unused when
gradients are dense.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from kexue.optim.rowwise import adam_rows_, supports_rowwise, touched_rows
from kexue.optim.wrapper import OptimizerWrapper

MOMENT_MODES = ("freeze", "decay")


class Lazy(OptimizerWrapper):
    """Lazy wrapper: listed tables only update (and, with ``"freeze"``, only age) touched rows.

    Args:
        optimizer: inner optimizer (Adam, AdamW, RMSprop, SGD with momentum, ...) that owns the
            listed parameters.
        params: the embedding tables (tensors, or modules whose parameters are all taken, e.g.
            an ``nn.Embedding``); rows are dimension 0 (a tied output embedding ``(v, d)`` works
            as is). Gradients may be dense or sparse COO.
        moments: ``"freeze"`` (unused rows keep their optimizer state) or ``"decay"`` (the inner
            state decays as with a zero gradient; Su's variant).
        fast_path: ``None`` picks the row-wise Adam path where it applies; ``False`` forces the
            generic path; ``True`` raises if a listed parameter cannot use it.

    Raises:
        TypeError: ``optimizer`` is not an optimizer, or ``params`` holds something else.
        ValueError: ``params`` is empty or names a tensor the optimizer does not own, unknown
            ``moments``, or ``fast_path=True`` where it does not apply.

    Example:
        >>> emb = nn.Embedding(50_000, 128, sparse=True)
        >>> opt = Lazy(torch.optim.Adam(model.parameters(), 1e-3), params=[emb])
    """

    state_key = "lazy"

    def __init__(
        self,
        optimizer: Optimizer,
        params: Iterable[torch.Tensor | nn.Module],
        *,
        moments: str = "freeze",
        fast_path: bool | None = None,
    ) -> None:
        super().__init__(optimizer)
        if moments not in MOMENT_MODES:
            raise ValueError(f"moments must be one of {MOMENT_MODES}, got {moments!r}")
        if fast_path not in (None, True, False):
            raise TypeError(f"fast_path must be None, True or False, got {fast_path!r}")
        self.moments = moments
        self.fast_path = fast_path
        if isinstance(params, torch.Tensor | nn.Module):
            params = [params]
        lazy: dict[int, torch.Tensor] = {}
        for item in params:
            if isinstance(item, nn.Module):
                tensors = list(item.parameters())
            elif isinstance(item, torch.Tensor):
                tensors = [item]
            else:
                raise TypeError(
                    f"params must hold tensors or nn.Modules, got {type(item).__name__}"
                )
            for t in tensors:
                if t.dim() < 1:
                    raise ValueError(
                        f"params: a lazy parameter needs rows, got shape {tuple(t.shape)}"
                    )
                lazy[id(t)] = t
        if not lazy:
            raise ValueError("params must list at least one parameter")
        owned = {id(p) for p in self._params()}
        for t in lazy.values():
            if id(t) not in owned:
                raise ValueError(
                    f"params: a tensor of shape {tuple(t.shape)} is not in the optimizer's "
                    "param_groups"
                )
        self.lazy_params = list(lazy.values())
        if fast_path is True:
            for p in self.lazy_params:
                if not self._can_fast(p, self._group_of(p)):
                    raise ValueError(
                        f"fast_path=True, but the row-wise path does not apply to "
                        f"{type(optimizer).__name__} with moments={moments!r} for a parameter "
                        f"of shape {tuple(p.shape)} (needs Adam/AdamW without amsgrad; 'decay' also no L2 weight_decay)"
                    )

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The inner optimizer's state (the same object)."""
        return self.optimizer.state

    def _extra_repr(self) -> str:
        return f"moments={self.moments!r}, lazy_params={len(self.lazy_params)}"

    def _group_of(self, p: torch.Tensor) -> dict[str, Any]:
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                return group
        raise ValueError("a lazy parameter is no longer in the optimizer's param_groups")

    def _can_fast(self, p: torch.Tensor, group: dict[str, Any]) -> bool:
        if self.fast_path is False:
            return False
        return supports_rowwise(self.optimizer, group, p, self.moments)

    def uses_fast_path(self, p: torch.Tensor) -> bool:
        """Whether ``step()`` updates lazy parameter ``p`` with the row-wise Adam path.

        Args:
            p: one of :attr:`lazy_params`.
        """
        return self._can_fast(p, self._group_of(p))

    # -- step ----------------------------------------------------------------------------------
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Evaluate ``closure`` (if given), then one lazy step of every parameter.

        Args:
            closure: re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._lazy_step()
        return loss

    def _lazy_step(self) -> None:
        fast: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = []
        generic: list[tuple[torch.Tensor, torch.Tensor]] = []
        for p in self.lazy_params:
            if p.grad is None:
                continue
            group = self._group_of(p)
            if self._can_fast(p, group):
                fast.append((p, p.grad, group))
                p.grad = None  # hide it from the inner step
            else:
                generic.append((p, p.grad))
        restore = [self._save_unused_rows(p, grad) for p, grad in generic]
        try:
            self.optimizer.step()
        finally:
            for p, grad, _ in fast:
                p.grad = grad
            for (p, grad), saved in zip(generic, restore):
                p.grad = grad
                if saved is not None:
                    self._restore_unused_rows(p, *saved)
        for p, grad, group in fast:
            idx, rows = touched_rows(grad)
            adam_rows_(
                p,
                idx,
                rows,
                self.optimizer.state[p],
                group,
                decay_untouched=self.moments == "decay",
            )

    def _save_unused_rows(self, p: torch.Tensor, grad: torch.Tensor) -> tuple | None:
        """Before the inner step: remember unused rows (of ``p`` and, in freeze mode, its state)."""
        idx, _ = touched_rows(grad)
        if grad.is_sparse:
            p.grad = grad.coalesce().to_dense()  # most optimizers reject sparse gradients
        used = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
        used[idx] = True
        unused = (~used).nonzero().squeeze(1)
        if unused.numel() == 0:
            return None
        old_rows = p.detach().index_select(0, unused)
        old_state: dict[str, torch.Tensor | None] = {}
        if self.moments == "freeze":
            for key, t in self.optimizer.state[p].items():
                if isinstance(t, torch.Tensor) and t.shape == p.shape:
                    old_state[key] = t.index_select(0, unused)
        return unused, old_rows, old_state

    def _restore_unused_rows(
        self,
        p: torch.Tensor,
        unused: torch.Tensor,
        old_rows: torch.Tensor,
        old_state: dict[str, torch.Tensor],
    ) -> None:
        """After the inner step: put the unused rows (and frozen state rows) back."""
        p.detach().index_copy_(0, unused, old_rows)
        if self.moments != "freeze":
            return
        for key, t in self.optimizer.state[p].items():
            if not (isinstance(t, torch.Tensor) and t.shape == p.shape):
                continue
            if key in old_state:
                t.index_copy_(0, unused, old_state[key])
            else:  # state created by this step: unused rows keep the initial (zero) value
                t.index_fill_(0, unused, 0)

    # -- state dict ----------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"moments": self.moments}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if extra.get("moments", self.moments) != self.moments:
            raise ValueError(
                f"state_dict was saved with moments={extra['moments']!r}, this optimizer uses "
                f"moments={self.moments!r}"
            )
