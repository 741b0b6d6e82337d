r"""Row-sparse Adam/AdamW update: touch only the rows of a table that received a gradient.

For a table :math:`W \in \mathbb{R}^{v \times d}` and the set :math:`R` of touched rows
(``idx``), with the global step :math:`t` of the parameter:

.. math::

    m_R \leftarrow \beta_1 m_R + (1-\beta_1) G_R,\quad
    v_R \leftarrow \beta_2 v_R + (1-\beta_2) G_R^2,\quad
    W_R \leftarrow W_R - \frac{\eta}{1-\beta_1^t}\,
        \frac{m_R}{\sqrt{v_R}/\sqrt{1-\beta_2^t} + \epsilon},

(AdamW: :math:`W_R \leftarrow (1-\eta\lambda) W_R` first; Adam: :math:`G_R \leftarrow G_R +
\lambda W_R`), and nothing else changes: rows outside :math:`R` keep their weights *and*
moments. That is the "strict lazy" rule of TF ``LazyAdamOptimizer`` and ``torch.optim.SparseAdam``:
bias correction uses the parameter's global step :math:`t`, not a per-row count (FBGEMM's
per-row counters are a third semantics, not implemented).

The update runs PyTorch's fused Adam kernel on the gathered rows (one pass; a readable
reference spelling out ``torch.optim.Adam``'s single-tensor operations is kept and tested
against it), and the state layout (``step``, ``exp_avg``, ``exp_avg_sq``) is Adam's, so
this path, the generic :class:`~kexue.optim.Lazy` path and a plain ``Adam`` can take turns on
the same state. One difference from ``SparseAdam``: it adds :math:`\epsilon` to
:math:`\sqrt{v}` *before* bias correction, i.e. it is Adam with
:math:`\epsilon \to \epsilon / \sqrt{1-\beta_2^t}` (31x larger at step 1 with
:math:`\beta_2 = 0.999`); the two agree closely only where :math:`|g| \gg \epsilon/\sqrt{1-\beta_2^t}`.

Cost: :math:`O(|R|\,d)` plus the gradient scan (dense gradients: one pass over the table to find
non-zero rows; sparse gradients: a coalesce of the indices).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Adam


def _scalar(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def supports_rowwise(
    optimizer: torch.optim.Optimizer,
    group: dict[str, Any],
    p: torch.Tensor,
    moments: str = "freeze",
) -> bool:
    """Whether :func:`adam_rows_` reproduces the lazy update of ``p`` under ``optimizer``.

    True for ``torch.optim.Adam``/``AdamW`` (exact classes' ``step``) without ``amsgrad``,
    ``capturable`` or ``differentiable``, on a real floating-point parameter of rank >= 1. With
    ``moments="decay"`` also needs no coupled (L2) weight decay, which would give unused rows a
    non-zero gradient ``lambda * W``.

    Args:
        optimizer: the optimizer that owns ``p``.
        group: ``p``'s parameter group.
        p: the parameter.
        moments: ``"freeze"`` or ``"decay"`` (see :class:`~kexue.optim.Lazy`).
    """
    if not isinstance(optimizer, Adam) or type(optimizer).step is not Adam.step:
        return False
    if group.get("amsgrad") or group.get("capturable") or group.get("differentiable"):
        return False
    if (
        moments == "decay"
        and group["weight_decay"] != 0
        and not group.get("decoupled_weight_decay")
    ):
        return False
    return p.dim() >= 1 and p.is_floating_point() and not p.is_complex()


def init_adam_state(state: dict[str, Any], p: torch.Tensor, group: dict[str, Any]) -> None:
    """Create Adam's state for ``p`` exactly as ``torch.optim.Adam`` would (if empty).

    Args:
        state: ``optimizer.state[p]`` (filled in place).
        p: the parameter.
        group: its parameter group (``fused``/``capturable`` decide where ``step`` lives).
    """
    if len(state) != 0:
        return
    if group.get("fused") or group.get("capturable"):
        dtype = torch.float32 if group.get("fused") else torch.get_default_dtype()
        state["step"] = torch.zeros((), dtype=dtype, device=p.device)
    else:
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        state["step"] = torch.tensor(0.0, dtype=dtype, device="cpu")
    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def touched_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a table that received a gradient, and their gradient rows.

    Dense gradient: the rows with at least one non-zero entry (one pass, ``amax``/``amin`` per
    row, no temporary of the table's size). Sparse COO gradient (``nn.Embedding(sparse=True)``):
    the coalesced indices (duplicates summed), whatever their values.

    Args:
        grad: ``(v, *)`` dense or sparse COO gradient with one sparse dimension.

    Returns:
        ``idx``: ``(r,)`` int64 sorted unique row indices; ``rows``: ``(r, *)`` gradient rows.
    """
    if grad.is_sparse:
        g = grad.coalesce()
        if g.sparse_dim() != 1:
            g = g.to_dense()
            return touched_rows(g)
        return g.indices()[0], g.values()
    flat = grad.reshape(grad.shape[0], -1)
    if flat.shape[1] == 0:
        idx = torch.zeros(0, dtype=torch.long, device=grad.device)
    else:
        nonzero = flat.amax(1).ne(0) | flat.amin(1).ne(0)
        idx = nonzero.nonzero().squeeze(1)
    return idx, grad.index_select(0, idx)


@torch.no_grad()
def adam_rows_(
    p: torch.Tensor,
    idx: torch.Tensor,
    grad_rows: torch.Tensor,
    state: dict[str, Any],
    group: dict[str, Any],
    *,
    decay_untouched: bool = False,
    impl: str = "fused",
) -> None:
    """Apply one Adam/AdamW step to rows ``idx`` of ``p`` (in place), leaving other rows alone.

    Args:
        p: ``(v, *)`` parameter.
        idx: ``(r,)`` int64 unique row indices.
        grad_rows: ``(r, *)`` gradient of those rows.
        state: ``optimizer.state[p]`` with Adam's layout (created if empty); ``step`` advances
            by one even if ``r == 0`` (global step, as in ``SparseAdam``).
        group: the parameter group (``lr``, ``betas``, ``eps``, ``weight_decay``,
            ``maximize``, ``decoupled_weight_decay``).
        decay_untouched: also decay the moments of the other rows as Adam does with a zero
            gradient (:math:`m \\leftarrow \\beta_1 m`, :math:`v \\leftarrow \\beta_2 v`: Su's
            ``moments="decay"``); two passes over the table instead of none.
        impl: ``"fused"`` runs PyTorch's fused Adam kernel on the gathered rows (one pass;
            falls back to the reference where the kernel is unavailable); ``"reference"`` spells
            the update out with the single-tensor ``Adam`` operations.

    Raises:
        ValueError: unknown ``impl``.
    """
    if impl not in ("fused", "reference"):
        raise ValueError(f"impl must be 'fused' or 'reference', got {impl!r}")
    init_adam_state(state, p, group)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    w = p.index_select(0, idx)  # (r, *) touched rows
    m = exp_avg.index_select(0, idx)
    v = exp_avg_sq.index_select(0, idx)
    if decay_untouched:  # what Adam's own ops do with g = 0 (bitwise): lerp to 0, scale by beta2
        exp_avg.lerp_(exp_avg.new_zeros(()), 1 - _scalar(group["betas"][0]))
        exp_avg_sq.mul_(_scalar(group["betas"][1]))
    if idx.numel() == 0:
        state["step"] += 1
        return
    grad = grad_rows.to(p.dtype).contiguous()
    if impl == "fused" and _fused_rows(w, grad, m, v, state, group):
        pass
    else:
        state["step"] += 1
        _reference_rows(w, grad, m, v, _scalar(state["step"]), group)
    p.index_copy_(0, idx, w)
    exp_avg.index_copy_(0, idx, m)
    exp_avg_sq.index_copy_(0, idx, v)


def _fused_rows(w, grad, m, v, state: dict[str, Any], group: dict[str, Any]) -> bool:
    """One fused-kernel pass over the gathered rows; ``False`` (nothing changed) if unsupported."""
    kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
    step = state["step"] + 1  # the kernel reads t from a tensor, like Adam(fused=True)
    try:
        kernel(
            [w], [grad], [m], [v], [], [step],
            amsgrad=False, lr=_scalar(group["lr"]), beta1=_scalar(group["betas"][0]),
            beta2=_scalar(group["betas"][1]), weight_decay=float(group["weight_decay"]),
            eps=float(group["eps"]), maximize=bool(group.get("maximize", False)),
            grad_scale=None, found_inf=None,
        )  # fmt: skip
    except (RuntimeError, NotImplementedError):
        return False
    state["step"].copy_(step)
    return True


def _reference_rows(w, grad, m, v, step: float, group: dict[str, Any]) -> None:
    """Adam's single-tensor update spelled out, on gathered rows (in place)."""
    lr = _scalar(group["lr"])
    beta1, beta2 = (_scalar(b) for b in group["betas"])
    eps, wd = float(group["eps"]), float(group["weight_decay"])
    if group.get("maximize"):
        grad = -grad
    if wd != 0:
        if group.get("decoupled_weight_decay"):
            w.mul_(1 - lr * wd)  # AdamW: decoupled decay of touched rows only
        else:
            grad = grad.add(w, alpha=wd)  # Adam: L2 term in the gradient
    m.lerp_(grad, 1 - beta1)  # first moment
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # second moment
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
    w.addcdiv_(m, denom, value=-(lr / bias_correction1))
