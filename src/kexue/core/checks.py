"""Boundary validation: public functions call these and raise clear ``ValueError``/``TypeError``.

House rule: validate at the boundary (naming the argument, the expected and the received shape),
assert inside private helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Dim = int | str | None


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_shape(
    x: torch.Tensor, name: str, expected: Sequence[Dim], sizes: dict[str, int] | None = None
) -> dict[str, int]:
    """Check ``x.shape`` against a symbolic shape and bind the symbols.

    Args:
        x: tensor to check.
        name: argument name used in the error message.
        expected: one entry per dimension: an int (exact size), a str symbol (bound on first use,
            must agree afterwards, e.g. ``("b", "n", "k")``) or ``None`` (any size).
        sizes: symbols already bound by earlier arguments; updated in place and returned.

    Returns:
        The dict of bound symbols.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: rank or a size differs, e.g.
            ``emissions must have shape (b, t, k), got (2, 3)``.
    """
    check_tensor(x, name)
    sizes = {} if sizes is None else sizes
    pretty = "(" + ", ".join("*" if d is None else str(d) for d in expected) + ")"
    got = tuple(x.shape)
    if x.dim() != len(expected):
        raise ValueError(f"{name} must have shape {pretty}, got {got}")
    for dim, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want is None:
            continue
        if isinstance(want, int):
            if have != want:
                raise ValueError(
                    f"{name} must have shape {pretty}, got {got} (dim {dim} should be {want})"
                )
        else:
            bound = sizes.setdefault(want, have)
            if bound != have:
                raise ValueError(
                    f"{name} must have shape {pretty} with {want}={bound} from earlier arguments, got {got}"
                )
    return sizes


def check_dtype(x: torch.Tensor, name: str, allowed: Sequence[torch.dtype] | str) -> None:
    """Raise ``TypeError`` unless ``x.dtype`` is allowed (``"float"``/``"int"``/``"bool"`` or a list)."""
    if allowed == "float":
        ok = x.is_floating_point()
    elif allowed == "int":
        ok = not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    elif allowed == "bool":
        ok = x.dtype == torch.bool
    else:
        ok = x.dtype in tuple(allowed)
    if not ok:
        raise TypeError(f"{name} must have a {allowed} dtype, got {x.dtype}")


def check_positive_int(
    value: object, name: str, minimum: int = 1, *, type_error: type[Exception] = TypeError
) -> int:
    """Raise unless ``value`` is an int ``>= minimum`` (bools are rejected); return it.

    Args:
        value: the value to check.
        name: argument name for the message (e.g. ``"window"`` or ``"TrainConfig.max_steps"``).
        minimum: smallest allowed value (0 for counts that may be empty).
        type_error: exception raised for a non-int; config dataclasses pass ``ValueError`` so
            that every bad field raises ``ValueError``.

    Raises:
        TypeError: (or ``type_error``) ``value`` is not an int, e.g. ``window must be an int,
            got float (2.5)``.
        ValueError: ``value < minimum``, e.g. ``window must be >= 0, got -1``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_config_int(value: object, name: str, minimum: int = 1) -> int:
    """A config field that must be an int ``>= minimum``: ``ValueError`` (bools rejected).

    The one message every experiment ``Config`` uses: ``"depth must be an int >= 1, got -3"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
