"""The CUDA path (only where a GPU is visible): device placement, bf16, resume on the GPU."""

from __future__ import annotations

import pytest
import torch

from ._tiny import make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(out, steps, model_seed=0, bf16=False):
    return make_trainer(out, steps, model_seed=model_seed, seed=2, bf16=bf16)


@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_train_and_resume(tmp_path, bf16):
    a = _trainer(tmp_path / "a", 12, bf16=bf16)
    a.fit()
    assert next(a.model.parameters()).is_cuda
    _trainer(tmp_path / "b", 6, bf16=bf16).fit()
    b = _trainer(tmp_path / "b", 12, model_seed=3, bf16=bf16)
    b.fit(resume=True)
    for k, v in a.model.state_dict().items():
        # same kernels, same inputs, same RNG streams: equal up to GPU atomics nondeterminism
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=1e-5, atol=1e-6)
