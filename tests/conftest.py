"""Shared pytest setup: a hypothesis profile without deadlines (CI machines are slow and shared)."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# two cores: one intra-op thread per test process keeps timings predictable
torch.set_num_threads(int(os.environ.get("KEXUE_TEST_THREADS", "2")))
