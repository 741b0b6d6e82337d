"""Mask/length conversion. Masks are bool with True = valid (keep/attend), right padded."""

from __future__ import annotations

import torch

from kexue.core.checks import check_shape


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Turn lengths into a right-padded validity mask.

    Args:
        lengths: ``(b,)`` integer tensor, ``0 <= lengths[i] <= max_len``.
        max_len: ``n``; defaults to ``lengths.max()``.

    Returns:
        ``(b, n)`` bool tensor, ``mask[i, j] = j < lengths[i]``.
    """
    check_shape(lengths, "lengths", ("b",))
    if lengths.is_floating_point():
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    n = int(lengths.max().item()) if max_len is None and lengths.numel() else int(max_len or 0)
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > n):
        raise ValueError(
            f"lengths must lie in [0, {n}], got min {int(lengths.min())} max {int(lengths.max())}"
        )
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


def mask_to_lengths(mask: torch.Tensor) -> torch.Tensor:
    """``(b, n)`` bool mask -> ``(b,)`` int64 lengths (number of True per row)."""
    check_shape(mask, "mask", ("b", "n"))
    return mask.long().sum(-1)


def resolve_mask(
    mask: torch.Tensor | None, lengths: torch.Tensor | None, b: int, n: int, device: torch.device
) -> torch.Tensor:
    """Return a ``(b, n)`` bool mask from either ``mask`` or ``lengths`` (all-valid if neither).

    Raises:
        ValueError: both are given, or the shapes do not match ``(b, n)`` / ``(b,)``.
    """
    if mask is not None and lengths is not None:
        raise ValueError("pass either mask or lengths, not both")
    if lengths is not None:
        check_shape(lengths, "lengths", (b,))
        return lengths_to_mask(lengths.to(device), n)
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=device)
    check_shape(mask, "mask", (b, n))
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid), got {mask.dtype}")
    return mask
