"""One training loop for every kexue experiment.

Example (runs unchanged under ``torchrun --nproc_per_node=2 script.py``)::

    from kexue.train import TrainConfig, Trainer

    def loss_fn(model, batch):                     # model may be DDP-wrapped: call model(...)
        x, y = batch
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(-1) == y).float().mean(), "tokens": x.shape[0]}

    cfg = TrainConfig(max_steps=1000, batch_size=32, eval_every=200, log_every=20,
                      ckpt_every=500, grad_clip=1.0, seed=0)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 1e-3), train_data=dataset,
                      loss_fn=loss_fn, eval_fn=lambda m: {"dev_acc": evaluate(m)},
                      config=cfg, out_dir="runs/x")
    history = trainer.fit(resume=True)             # continues from runs/x/checkpoints if any

``out_dir`` then holds ``metrics.jsonl`` (one JSON record per log/eval event), ``checkpoints/``
(``step_XXXXXXXX/`` directories: ``model.safetensors``, ``state.safetensors``, ``state.json``,
``manifest.json``), the final ``model.safetensors``, ``train_config.json`` and ``history.json``.
:mod:`kexue.train.distributed` holds the only ``torch.distributed`` calls the rest of the library
needs (``is_main_process()``, ``world_size()``, ``barrier()``, ``unwrap(model)``).
"""

from kexue.train import distributed
from kexue.train.checkpoint import (
    CorruptCheckpointError,
    checkpoint_problem,
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
    "CorruptCheckpointError",
    "Trainer",
    "TrainConfig",
    "barrier",
    "checkpoint_problem",
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
