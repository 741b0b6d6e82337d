"""Tiny models are fastest on one intra-op thread (and far steadier on a shared CPU)."""

from __future__ import annotations

import pytest

from kexue.core.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield
