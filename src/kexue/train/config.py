"""Training configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kexue.core.checks import check_positive_int


def _opt_int(value: object, name: str, minimum: int, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}, got None")
        return
    check_positive_int(value, f"TrainConfig.{name}", minimum, type_error=ValueError)


@dataclass(frozen=True)
class TrainConfig:
    """How :class:`kexue.train.Trainer` runs.

    Training length is ``max_steps`` optimizer steps or ``epochs`` passes over the data; at least
    one must be set, and when both are set training stops at whichever comes first.

    Attributes:
        max_steps: number of optimizer steps (``None``: use ``epochs``).
        batch_size: examples per step *per process* (the global batch is ``batch_size * world``).
        eval_every: call ``eval_fn`` every this many steps (``None`` or 0: only at the end).
        log_every: write a ``train`` record to ``metrics.jsonl`` every this many steps.
        ckpt_every: checkpoint every this many steps (``None`` or 0: only at the end). A
            checkpoint is always written when ``fit`` finishes.
        grad_clip: clip the global gradient L2 norm to this value (``None`` or 0: no clipping).
            The pre-clip norm is logged as ``grad_norm``: the mean over the log window when
            clipping (it is computed every step anyway), otherwise the norm at the logging step
            only (computing it every step would cost a pass over all gradients for nothing).
        bf16: run ``loss_fn`` under ``torch.autocast(dtype=torch.bfloat16)`` (CPU or CUDA).
        seed: seeds data order (shared by all ranks) and Python/NumPy/torch RNGs (``seed + rank``).
        num_workers: DataLoader worker processes.
        epochs: number of passes over the data (``None``: use ``max_steps``).
        shuffle: reshuffle the data every epoch (seeded by ``seed + epoch``).
        drop_last: drop the last incomplete batch of every epoch.
        keep_last: keep only the newest this many checkpoints (``None`` or 0: keep all).
        device: ``"cpu"``, ``"cuda"``, ... (``None``: ``cuda:LOCAL_RANK`` if available, else CPU).
        find_unused_parameters: passed to ``DistributedDataParallel``.
    """

    max_steps: int | None = None
    batch_size: int = 32
    eval_every: int | None = None
    log_every: int = 20
    ckpt_every: int | None = None
    grad_clip: float | None = None
    bf16: bool = False
    seed: int = 0
    num_workers: int = 0
    epochs: int | None = None
    shuffle: bool = True
    drop_last: bool = False
    keep_last: int | None = 2
    device: str | None = None
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("TrainConfig needs max_steps or epochs (both are None)")
        _opt_int(self.max_steps, "max_steps", 1)
        _opt_int(self.epochs, "epochs", 1)
        _opt_int(self.batch_size, "batch_size", 1, required=True)
        _opt_int(self.eval_every, "eval_every", 0)
        _opt_int(self.log_every, "log_every", 1, required=True)
        _opt_int(self.ckpt_every, "ckpt_every", 0)
        _opt_int(self.num_workers, "num_workers", 0, required=True)
        _opt_int(self.keep_last, "keep_last", 0)
        check_positive_int(
            self.seed, "TrainConfig.seed", -(2**63), type_error=ValueError
        )  # any int
        if self.grad_clip is not None:
            if isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, int | float):
                raise ValueError(
                    f"TrainConfig.grad_clip must be a number or None, got {self.grad_clip!r}"
                )
            if not self.grad_clip >= 0 or self.grad_clip == float("inf"):
                raise ValueError(
                    f"TrainConfig.grad_clip must be finite and >= 0, got {self.grad_clip}"
                )
        for flag in ("bf16", "shuffle", "drop_last", "find_unused_parameters"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"TrainConfig.{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device must be a str or None, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable)."""
        return dataclasses.asdict(self)
