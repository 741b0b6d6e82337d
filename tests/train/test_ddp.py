"""``torchrun --nproc_per_node=2`` on CPU (gloo): trains, replicas agree, rank 0 checkpoints, resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from kexue.core.io import load_safetensors
from kexue.train import latest_checkpoint

SCRIPT = Path(__file__).with_name("ddp_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU / gloo path, even on a GPU machine
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "--master_addr=127.0.0.1",
        str(SCRIPT),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    w = {
        f"{r}{v}": load_safetensors(tmp_path / f"rank{r}_{v}.safetensors")
        for r in (0, 1)
        for v in "ab"
    }
    for k in w["0a"]:
        assert torch.equal(w["0a"][k], w["1a"][k]), k  # replicas identical
        assert torch.equal(w["0a"][k], w["0b"][k]), k  # DDP resume is bit-exact
        assert torch.equal(w["1a"][k], w["1b"][k]), k
    # it trained: weights moved away from the (rank 0) initialisation
    sys.path.insert(0, str(SCRIPT.parent))
    from _tiny import make_model

    init = make_model(seed=0).state_dict()
    assert any(not torch.equal(init[k], w["0a"][k]) for k in init)

    ckpt = latest_checkpoint(tmp_path / "a" / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_00000008"
    assert torch.equal(
        load_safetensors(ckpt / "model.safetensors")["0.weight"], w["0a"]["0.weight"]
    )
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["event"] == "eval"] == [3, 6, 8]
    assert [r["step"] for r in recs if r["event"] == "train"] == [
        2,
        4,
        6,
        8,
    ]  # written once (rank 0)
    cfg = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert cfg["world_size"] == 2
