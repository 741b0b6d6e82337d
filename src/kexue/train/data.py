"""Deterministic, resumable data order for :class:`kexue.train.Trainer`.

Epoch ``e`` visits a permutation seeded by ``seed + e`` (``DistributedSampler`` semantics: the
same permutation on every rank, padded and split ``rank::world``), cut into batches of
``batch_size``. Because the order is a pure function of ``(seed, epoch)``, resuming mid-epoch
only needs the epoch and the number of batches already consumed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def epoch_batches(
    dataset: Dataset,
    *,
    epoch: int,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """Index batches this rank sees in ``epoch``.

    Returns:
        List of index lists, each of length ``batch_size`` (the last may be shorter unless
        ``drop_last``). Every rank gets the same number of batches.
    """
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
    )
    sampler.set_epoch(epoch)
    idx = list(sampler)
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def make_loader(
    dataset: Dataset,
    batches: Sequence[list[int]],
    *,
    seed: int,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over fixed index ``batches``.

    It owns a private generator seeded by ``seed``: creating the iterator then does not consume
    the global torch RNG (which would make a resumed run's dropout masks differ from an
    uninterrupted run's).
    """
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=list(batches),
        collate_fn=collate_fn,
        num_workers=num_workers,
        generator=g,
        pin_memory=pin_memory,
    )


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested dicts/lists/tuples to ``device`` (other leaves untouched)."""
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device) for k, v in batch.items()}
        try:
            return type(batch)(moved)  # type: ignore[call-arg]
        except TypeError:  # mappings without a dict constructor (e.g. defaultdict)
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
