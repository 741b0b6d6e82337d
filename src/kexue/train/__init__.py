"""One training loop for every kexue experiment.

``Trainer(model, optimizer, train_data=..., loss_fn=..., config=TrainConfig(...), out_dir=...)``
then ``trainer.fit(resume=False)``: tqdm progress, ``metrics.jsonl``, periodic evaluation,
gradient clipping, bf16 autocast, atomic safetensors checkpoints with bit-exact resume, and
``torchrun`` / DDP support. :mod:`kexue.train.distributed` holds the only ``torch.distributed``
calls the rest of the library needs.
"""

from kexue.train import distributed
from kexue.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from kexue.train.config import TrainConfig
from kexue.train.distributed import barrier, is_main_process, unwrap, world_size
from kexue.train.trainer import Trainer, move_to_device

__all__ = [
    "Trainer",
    "TrainConfig",
    "barrier",
    "distributed",
    "is_main_process",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "move_to_device",
    "save_checkpoint",
    "save_model",
    "unwrap",
    "world_size",
]
