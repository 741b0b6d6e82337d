"""Checkpoint format (no pickle) and atomicity under a simulated crash mid-write."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kexue.train.checkpoint as ckpt_mod
from kexue.train import latest_checkpoint, list_checkpoints, load_checkpoint
from kexue.train.checkpoint import flatten_state, is_valid_checkpoint, unflatten_state

from ._tiny import make_model, make_trainer


def test_flatten_roundtrip_keeps_types():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "m": torch.randn(2, 3)}, 1: {"k": [1, 2]}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "fused": None}],
        "slow": {"__tensor__": "not a marker"},  # a user key colliding with a marker
        "np": np.arange(5, dtype=np.uint32),
        "nan": float("nan"),
        "nested": ("MT", (1, 2), None),
    }
    skel, tensors = flatten_state(state)
    back = unflatten_state(skel, tensors)
    assert set(back["state"]) == {0, 1}
    assert torch.equal(back["state"][0]["m"], state["state"][0]["m"])
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["slow"] == {"__tensor__": "not a marker"}
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [0, 1, 2, 3, 4]
    assert math.isnan(back["nan"]) and back["nested"] == ("MT", (1, 2), None)
    with pytest.raises(TypeError, match="pickle"):
        flatten_state({"f": object()})


def _trainer(out, max_steps, **kw):
    return make_trainer(out, max_steps, ckpt_every=2, keep_last=None, seed=5, **kw)


@pytest.mark.parametrize("fail_on", ["state.safetensors", "manifest.json", "rename"])
def test_crash_mid_checkpoint_keeps_previous_intact(tmp_path, monkeypatch, fail_on):
    real_save, real_text, real_rename = (
        ckpt_mod.save_safetensors,
        ckpt_mod.atomic_write_text,
        ckpt_mod.os.rename,
    )
    calls = {"n": 0}

    def boom_if(name, step_seen):
        if step_seen:
            raise OSError("disk full (simulated)")

    def save(tensors, path, metadata=None):
        boom_if(path.name, fail_on == path.name and ".tmp_step_00000004" in str(path))
        return real_save(tensors, path, metadata=metadata)

    def text(path, s):
        boom_if(path.name, fail_on == path.name and ".tmp_step_00000004" in str(path))
        return real_text(path, s)

    def rename(src, dst):
        calls["n"] += 1
        boom_if("rename", fail_on == "rename" and str(dst).endswith("step_00000004"))
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt_mod, "save_safetensors", save)
    monkeypatch.setattr(ckpt_mod, "atomic_write_text", text)
    monkeypatch.setattr(ckpt_mod.os, "rename", rename)
    t = _trainer(tmp_path, 6)
    with pytest.raises(OSError, match="disk full"):
        t.fit()
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step_00000002"]  # no temporaries left behind
    assert latest_checkpoint(root).name == "step_00000002"
    state = load_checkpoint(root / "step_00000002", model=make_model(seed=7))
    assert state["step"] == 2

    # resuming after the crash lands exactly where an uninterrupted run does
    monkeypatch.undo()
    resumed = _trainer(tmp_path, 6)
    resumed.fit(resume=True)
    straight = _trainer(tmp_path / "straight", 6)
    straight.fit()
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_incomplete_or_corrupt_directories_are_ignored(tmp_path):
    t = _trainer(tmp_path, 4)
    t.fit()
    root = tmp_path / "checkpoints"
    good = latest_checkpoint(root)
    assert good.name == "step_00000004"
    # a directory without manifest (crash before rename can't produce it, but a copy might)
    torn = root / "step_00000009"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"garbage")
    # a truncated file under a valid-looking manifest
    trunc = root / "step_00000008"
    import shutil

    shutil.copytree(good, trunc)
    with open(trunc / "state.safetensors", "r+b") as f:
        f.truncate(10)
    assert not is_valid_checkpoint(torn) and not is_valid_checkpoint(trunc)
    assert latest_checkpoint(root) == good
    assert [p.name for p in list_checkpoints(root)] == ["step_00000002", "step_00000004"]
    with pytest.raises(ckpt_mod.CorruptCheckpointError, match="state.safetensors.*manifest"):
        load_checkpoint(trunc)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(root / "step_00000077")


def test_resave_same_step_replaces_atomically(tmp_path):
    model = make_model()
    root = tmp_path / "ck"
    ckpt_mod.save_checkpoint(root, 3, model, {"step": 3, "v": 1})
    ckpt_mod.save_checkpoint(root, 3, model, {"step": 3, "v": 2})
    assert [p.name for p in root.iterdir()] == ["step_00000003"]
    assert load_checkpoint(root / "step_00000003")["v"] == 2


def test_leftovers_of_a_killed_writer_are_cleaned_on_next_save(tmp_path):
    root = tmp_path / "ck"
    (root / ".tmp_step_00000005_abc").mkdir(parents=True)
    (root / ".tmp_step_00000005_abc" / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(root) is None  # a temporary is never a checkpoint
    ckpt_mod.save_checkpoint(root, 6, make_model(), {"step": 6})
    assert [p.name for p in root.iterdir()] == ["step_00000006"]
