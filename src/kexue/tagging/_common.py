"""Shared plumbing for the CRF/MEMM heads: input checks, constraints, gold scores, reductions."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from kexue.core.checks import check_shape
from kexue.core.masks import resolve_mask

REDUCTIONS = ("mean", "sum", "token_mean", "none")


class Constraints(NamedTuple):
    """Allowed moves of a tag scheme (True = allowed).

    Attributes:
        transitions: ``(k, k)`` bool, row = previous tag, column = next tag.
        start: ``(k,)`` bool, tags a sequence may start with.
        end: ``(k,)`` bool, tags a sequence may end with.
    """

    transitions: Tensor
    start: Tensor
    end: Tensor


def register_constraints(
    module: nn.Module, k: int, constraints: Tensor | Constraints | None
) -> None:
    """Store ``allowed``/``allowed_start``/``allowed_end`` bool buffers on ``module``."""
    if constraints is None:
        allowed = torch.ones(k, k, dtype=torch.bool)
        start = torch.ones(k, dtype=torch.bool)
        end = torch.ones(k, dtype=torch.bool)
        constrained = False
    else:
        if isinstance(constraints, Tensor):
            constraints = Constraints(
                constraints, torch.ones(k, dtype=torch.bool), torch.ones(k, dtype=torch.bool)
            )
        allowed, start, end = (torch.as_tensor(c) for c in constraints)
        check_shape(allowed, "constraints.transitions", (k, k))
        check_shape(start, "constraints.start", (k,))
        check_shape(end, "constraints.end", (k,))
        if not (allowed.dtype == start.dtype == end.dtype == torch.bool):
            raise ValueError("constraints must be bool tensors (True = allowed)")
        constrained = True
    module.register_buffer("allowed", allowed.clone())
    module.register_buffer("allowed_start", start.clone())
    module.register_buffer("allowed_end", end.clone())
    module.constrained = constrained


def check_inputs(
    emissions: Tensor,
    tags: Tensor | None,
    mask: Tensor | None,
    lengths: Tensor | None,
    k: int,
    finite: bool = False,
) -> Tensor:
    """Validate ``emissions (b, t, k)``, ``tags (b, t)`` and the mask; return the bool mask.

    ``finite=True`` (decoding) also requires finite emissions at valid positions: NaN scores
    have no best path, and max/argmax over NaN silently returns tag 0.

    Raises:
        ValueError: wrong shapes, empty sequences, a mask that is not a right-padded prefix mask
            with ``mask[:, 0]`` True, tags outside ``[0, k)`` at valid positions, or (with
            ``finite``) NaN/inf emissions.
    """
    sizes = check_shape(emissions, "emissions", ("b", "t", k))
    if not emissions.is_floating_point():
        raise ValueError(f"emissions must be a floating tensor, got {emissions.dtype}")
    b, t = sizes["b"], sizes["t"]
    if t < 1:
        raise ValueError(f"emissions must have t >= 1 steps, got shape {tuple(emissions.shape)}")
    mask = resolve_mask(mask, lengths, b, t, emissions.device)
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return mask  # value checks need data-dependent branches; shapes were checked above
    if b and not bool(mask[:, 0].all()):
        raise ValueError("mask[:, 0] must be True for every sequence (lengths >= 1)")
    if t > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be a right-padded prefix mask (True then False in each row)")
    if finite and not bool(torch.isfinite(emissions[mask]).all()):
        raise ValueError("emissions contain NaN/inf at valid positions: nothing to decode")
    if tags is not None:
        check_shape(tags, "tags", (b, t))
        if tags.is_floating_point() or tags.dtype == torch.bool:
            raise ValueError(f"tags must be an integer tensor, got {tags.dtype}")
        if bool((((tags < 0) | (tags >= k)) & mask).any()):
            raise ValueError(f"tags must lie in [0, {k}) at valid positions")
    return mask


def end_onehot(mask: Tensor) -> Tensor:
    """``(b, t)`` bool, True at the last valid step of each (prefix-masked) row."""
    nxt = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    return mask & ~nxt


def gold_score(emissions: Tensor, transitions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
    """$s(y)=\\sum_s f_s(y_s)+\\sum_{s\\ge2} g(y_{s-1},y_s)$ over valid steps, ``(b,)``."""
    tags = tags.masked_fill(~mask, 0)
    unary = emissions.gather(2, tags.unsqueeze(2)).squeeze(2) * mask  # (b, t)
    pair = transitions[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]  # (b, t-1)
    return unary.sum(1) + pair.sum(1)


def reduce_loss(nll: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """Reduce per-sequence losses ``(b,)``: mean over sequences, sum, per-token mean, or none."""
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    if reduction == "token_mean":
        return nll.sum() / mask.sum().clamp_min(1)
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def reverse_within_length(x: Tensor, mask: Tensor) -> Tensor:
    """Reverse each row of ``x (b, t, ...)`` within its valid length (``tf.reverse_sequence``)."""
    b, t = mask.shape
    lengths = mask.sum(1, keepdim=True)  # (b, 1)
    pos = torch.arange(t, device=mask.device).unsqueeze(0)  # (1, t)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (b, t)
    if x.dim() == 2:
        return x.gather(1, idx)
    shape = idx.shape + (1,) * (x.dim() - 2)
    return x.gather(1, idx.view(shape).expand_as(x))
