"""Run under ``torchrun --nproc_per_node=2``: straight and interrupted+resumed training.

Usage: ``torchrun --nproc_per_node=2 ddp_script.py OUT_DIR``. Writes ``OUT_DIR/rank{r}_{a,b}.safetensors``
with each rank's final weights (a: 8 straight steps, b: 4 steps then a fresh Trainer resumed to 8).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _tiny import loss_fn, make_data, make_model, make_opt_sched  # noqa: E402

from kexue.core.io import save_safetensors  # noqa: E402
from kexue.train import TrainConfig, Trainer, distributed, unwrap  # noqa: E402


def run(out: Path, steps: int, resume: bool, model_seed: int = 0) -> Trainer:
    model = make_model(seed=model_seed + distributed.rank())  # ranks start different: DDP syncs
    opt, sched = make_opt_sched(model)
    cfg = TrainConfig(
        max_steps=steps, batch_size=4, log_every=2, eval_every=3, ckpt_every=3, seed=1
    )
    t = Trainer(
        model,
        opt,
        train_data=make_data(),
        loss_fn=loss_fn,
        scheduler=sched,
        eval_fn=lambda m: {"w0": float(next(m.parameters()).sum())},
        config=cfg,
        out_dir=out,
        progress=False,
    )
    h = t.fit(resume=resume)
    assert h["steps"] == steps, h
    return t


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    a = run(out / "a", 8, resume=False)
    run(out / "b", 4, resume=False)
    b = run(out / "b", 8, resume=True, model_seed=50)
    assert distributed.world_size() == 2 and isinstance(
        a.model, torch.nn.parallel.DistributedDataParallel
    )
    r = distributed.rank()
    save_safetensors(unwrap(a.model).state_dict(), out / f"rank{r}_a.safetensors")
    save_safetensors(unwrap(b.model).state_dict(), out / f"rank{r}_b.safetensors")
    distributed.barrier()
    distributed.cleanup()


if __name__ == "__main__":
    main()
