"""Scoped torch intra-op thread count (experiments pin it; the caller's setting comes back)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from kexue.core.checks import check_positive_int


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; ``n = 0`` leaves the count as it is.

    Many small ops (tiled attention, tiny MLPs) stall under OpenMP oversubscription on a busy
    CPU, so experiments expose the count as a config field; the previous value is restored on
    exit, even on error.
    """
    check_positive_int(n, "threads", 0)
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
