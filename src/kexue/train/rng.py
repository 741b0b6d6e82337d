"""Capture and restore the global RNG states (Python, NumPy, torch CPU and CUDA)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def get_rng_state() -> dict[str, Any]:
    """The global RNG states as a dict of tuples/arrays/tensors (checkpointable without pickle)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state seed_everything seeds
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states captured by :func:`get_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. evaluation) without advancing any global RNG as seen from outside."""
    saved = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
