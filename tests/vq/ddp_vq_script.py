"""Run under ``torchrun --nproc_per_node=2``: EMA quantisers on different data per rank.

Usage: ``torchrun --nproc_per_node=2 ddp_vq_script.py OUT_DIR``. Writes
``OUT_DIR/rank{r}.safetensors`` with each rank's final codebooks and statistics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from kexue.core.io import save_safetensors
from kexue.vq import VectorQuantizer

STEPS, N, D, M = 4, 64, 3, 8


def batch(rank: int, step: int) -> torch.Tensor:
    """The data rank ``rank`` sees at ``step`` (the test regenerates it)."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(N, D, generator=g) * 0.5


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    r = dist.get_rank()
    torch.manual_seed(0)  # same initial codebooks on every rank, as DDP would broadcast
    ema = VectorQuantizer(M, D, ema_decay=0.8, init_range=1.0)
    restart = VectorQuantizer(M, D, ema_decay=0.8, init_range=5.0, dead_code_threshold=2.0)
    grad = VectorQuantizer(M, D, dead_code_threshold=2.0, init_range=5.0)
    torch.manual_seed(1 + r)  # different RNG streams per rank: restarts must still agree
    for step in range(STEPS):
        z = batch(r, step)
        ema(z)
        restart(z)
        grad(z)
    save_safetensors(
        {
            "ema": ema.codebook.contiguous(),
            "ema_count": ema.ema_count.contiguous(),
            "restart": restart.codebook.contiguous(),
            "grad": grad.codebook.detach().contiguous(),
            "perplexity": ema.stats["perplexity"].reshape(1),
        },
        out / f"rank{r}.safetensors",
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
