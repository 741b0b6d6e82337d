"""Trainer tests run on the CPU (bit-exactness is a CPU promise); test_cuda.py opts back in."""

from __future__ import annotations

import pytest
import torch

import kexue.train.distributed as distributed


@pytest.fixture(autouse=True)
def _cpu_default_device(request, monkeypatch):
    if request.node.path.name != "test_cuda.py":
        monkeypatch.setattr(distributed, "default_device", lambda: torch.device("cpu"))
