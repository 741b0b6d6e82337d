"""Checkpoint integrity (issue 9 §2): hashes verified on resume, fallback with a named warning,
no traceback on corrupt files, and a fresh ``fit()`` never discards an earlier run silently."""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings

import pytest
import torch

from kexue.train import CorruptCheckpointError, checkpoint_problem, latest_checkpoint
from kexue.train.checkpoint import load_checkpoint

from ._tiny import make_model, make_trainer


def _trainer(out, max_steps, **kw):
    return make_trainer(out, max_steps, ckpt_every=2, keep_last=None, seed=3, **kw)


def _weights(t):
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _flip_bit(path, offset_from_end=5):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def _corrupt_header(path):
    """Same size, garbage in the safetensors JSON header."""
    data = bytearray(path.read_bytes())
    data[8:20] = b"#" * 12
    path.write_bytes(bytes(data))


def _corrupt_json(path):
    """Same size, no longer JSON."""
    text = path.read_bytes()
    path.write_bytes(b"}" + text[1:])


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


CORRUPTIONS = {
    "bit flip in weights": ("model.safetensors", _flip_bit),
    "bit flip in optimizer state": ("state.safetensors", _flip_bit),
    "same-size header garbage": ("model.safetensors", _corrupt_header),
    "same-size state.json garbage": ("state.json", _corrupt_json),
    "truncated": ("state.safetensors", _truncate),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights after 4 and 6 steps of an uninterrupted run."""
    out = tmp_path_factory.mktemp("ref")
    four = _trainer(out / "four", 4)
    four.fit()
    six = _trainer(out / "six", 6)
    six.fit()
    return _weights(four), _weights(six)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_newest_checkpoint_falls_back_with_a_named_warning(tmp_path, kind, reference):
    _, six = reference
    _trainer(tmp_path, 6).fit()  # checkpoints at steps 2, 4, 6
    name, corrupt = CORRUPTIONS[kind]
    corrupt(tmp_path / "checkpoints" / "step_00000006" / name)
    problem = checkpoint_problem(tmp_path / "checkpoints" / "step_00000006")
    assert problem is not None and name in problem
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_00000004"

    t = _trainer(tmp_path, 6)
    with pytest.warns(UserWarning, match=r"step_00000006.*resuming from step_00000004") as rec:
        hist = t.fit(resume=True)
    assert any(name in str(w.message) for w in rec)
    assert hist["steps"] == 6
    assert _same(_weights(t), six)  # continued from step 4 and landed exactly where it should
    root = tmp_path / "checkpoints"
    assert (root / "corrupt_step_00000006" / name).is_file()  # set aside, not deleted
    assert checkpoint_problem(root / "step_00000006") is None  # step 6 written again


def test_all_corrupt_starts_from_scratch_naming_what_it_skipped(tmp_path, reference):
    _trainer(tmp_path, 4).fit()
    root = tmp_path / "checkpoints"
    _flip_bit(root / "step_00000004" / "model.safetensors")
    _corrupt_json(root / "step_00000002" / "state.json")
    t = _trainer(tmp_path, 4)
    with pytest.warns(UserWarning, match="starting from scratch") as rec:
        t.fit(resume=True)
    msg = " ".join(str(w.message) for w in rec)
    assert "step_00000004" in msg and "step_00000002" in msg and "deleting" not in msg
    assert _same(_weights(t), reference[0])  # a clean fresh run, not half-loaded weights


def test_explicit_corrupt_path_raises_one_line_naming_the_file(tmp_path):
    _trainer(tmp_path, 2).fit()
    ckpt = tmp_path / "checkpoints" / "step_00000002"
    _corrupt_header(ckpt / "model.safetensors")
    model = make_model(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CorruptCheckpointError, match="model.safetensors") as err:
        load_checkpoint(ckpt, model=model)
    assert "\n" not in str(err.value)
    assert _same(before, model.state_dict())  # nothing loaded from a corrupt checkpoint
    with pytest.raises(ValueError, match="sha256"):
        _trainer(tmp_path / "other", 4).fit(resume=ckpt)


def test_legacy_size_only_manifest_without_hashes_still_loads(tmp_path):
    _trainer(tmp_path, 2).fit()
    ckpt = tmp_path / "checkpoints" / "step_00000002"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"] = {n: e["size"] for n, e in manifest["files"].items()}
    manifest["version"] = 1
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    assert checkpoint_problem(ckpt) is None
    assert load_checkpoint(ckpt)["step"] == 2
    _corrupt_header(ckpt / "model.safetensors")  # no hash to catch it: the parse error does
    with pytest.raises(CorruptCheckpointError, match="not a readable safetensors"):
        load_checkpoint(ckpt)


def test_checkpoint_of_another_model_gives_one_line(tmp_path):
    _trainer(tmp_path, 2).fit()
    other = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(ValueError, match="another model") as err:
        load_checkpoint(tmp_path / "checkpoints" / "step_00000002", model=other)
    assert "\n" not in str(err.value) and "0.weight" in str(err.value)


def test_fresh_fit_refuses_to_discard_existing_checkpoints(tmp_path):
    _trainer(tmp_path, 4).fit()
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    log = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(
        ValueError, match=r"already holds 2 checkpoint.*resume=True.*overwrite=True"
    ):
        _trainer(tmp_path, 2).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert (tmp_path / "metrics.jsonl").read_text() == log
    with pytest.warns(UserWarning, match="deleting 2 old checkpoint"):
        _trainer(tmp_path, 2).fit(overwrite=True)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]
    with pytest.raises(TypeError, match="overwrite"):
        _trainer(tmp_path, 2).fit(overwrite="yes")


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        _trainer(tmp_path, 2).fit()
        from kexue.core.io import atomic_write_json, atomic_write_text

        atomic_write_text(tmp_path / "index.html", "<p>x</p>")
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    files = ["index.html", "r.json", "metrics.jsonl", "history.json", "model.safetensors"]
    ckpt = tmp_path / "checkpoints" / "step_00000002"
    paths = [tmp_path / f for f in files] + [ckpt / f for f in os.listdir(ckpt)]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755


def test_permissions_follow_the_umask(tmp_path):
    from kexue.core.io import atomic_write_text, save_safetensors

    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o600


def test_no_warning_when_everything_is_intact(tmp_path):
    _trainer(tmp_path, 4).fit()
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000004")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _trainer(tmp_path, 4).fit(resume=True)["steps"] == 4
