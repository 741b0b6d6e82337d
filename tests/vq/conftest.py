"""tests/vq: one torch intra-op thread per test (the small convolutions here stall badly under
OpenMP oversubscription when the two cores are shared; the CLI/experiment tests spawn none)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
