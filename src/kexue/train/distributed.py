"""Distributed helpers so the rest of kexue never touches ``torch.distributed`` directly.

Launch with ``torchrun --nproc_per_node=N script.py``: torchrun sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and initialises the
default process group (``nccl`` on CUDA, ``gloo`` on CPU). Without those variables everything
here degrades to single-process behaviour (rank 0 of 1, barrier is a no-op).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def launched_distributed() -> bool:
    """True when the environment asks for more than one process (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    if is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched_distributed() else 0


def local_rank() -> int:
    """Rank within this node (``LOCAL_RANK``; 0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    if is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 (and always when not distributed): the one process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when every local process can have its own GPU, else CPU.

    With fewer visible GPUs than ``LOCAL_WORLD_SIZE`` all processes use the CPU (and ``gloo``), so
    that the backend is the same on every rank.
    """
    if torch.cuda.is_available():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched_distributed() else 1
        if torch.cuda.device_count() >= local_world:
            return torch.device("cuda", local_rank())
    return torch.device("cpu")


def setup(device: torch.device | None = None) -> bool:
    """Initialise the default process group from torchrun's environment, if asked for.

    Args:
        device: the device this process trains on; selects the backend (``nccl`` for CUDA,
            ``gloo`` otherwise). Defaults to :func:`default_device`.

    Returns:
        True when running distributed (a process group exists after the call).
    """
    if is_initialized():
        return True
    if not launched_distributed():
        return False
    device = default_device() if device is None else torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return True


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(
    values: dict[str, float], device: torch.device | None = None
) -> dict[str, float]:
    """Average a dict of floats over all processes (identity when not distributed).

    Every process must call this with the same keys in the same order.
    """
    if not is_initialized() or dist.get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def all_reduce_sum(value: float, device: torch.device | None = None) -> float:
    """Sum a float over all processes (identity when not distributed)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def all_gather_object(obj: Any) -> list[Any]:
    """Collect one picklable object from every process (in memory only, never from files).

    Returns:
        List indexed by rank; ``[obj]`` when not distributed.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send one picklable object from ``src`` to every process; return it on all of them."""
    if not is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
