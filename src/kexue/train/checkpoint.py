"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a directory ``<out_dir>/checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors`` - the bare model's ``state_dict`` (DDP prefixes removed);
* ``state.safetensors`` - every tensor found in the training state (optimizer moments, RNG
  states, scheduler tensors), keyed ``t0, t1, ...``;
* ``state.json`` - the rest of the training state (step, epoch, position in the epoch, config,
  optimizer/scheduler structure) with ``{"__tensor__": "tK"}`` placeholders for the tensors;
* ``manifest.json`` - file names and sizes, written last.

Atomicity: the files are written into a hidden temporary directory next to the final one, each
fsync'ed, the manifest last, and the directory is then renamed into place (``os.rename`` is atomic
on POSIX). A reader only accepts directories named ``step_*`` whose manifest matches the files, so
a crash at any point leaves the previous checkpoint as the newest valid one.

The nested state is flattened by :func:`flatten_state`: dicts with string keys stay dicts, dicts
with other keys (the ``int`` parameter ids of optimizer state) become ``{"__items__": [[k, v]]}``,
tuples become ``{"__tuple__": [...]}``, NumPy arrays ``{"__ndarray__": [...], "dtype": ...}``.
Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kexue.core.io import atomic_write_text, load_safetensors, save_safetensors
from kexue.train.distributed import unwrap

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")
_MARKERS = ("__tensor__", "__items__", "__tuple__", "__ndarray__")


# ----------------------------------------------------------------------------- model weights
def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save ``unwrap(model).state_dict()`` to a safetensors file, atomically.

    Args:
        model: a module, possibly wrapped in DDP.
        path: target file, e.g. ``runs/x/model.safetensors``.

    Returns:
        The path written.
    """
    return save_safetensors(unwrap(model).state_dict(), path, metadata={"format": "pt"})


def load_model(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load weights saved by :func:`save_model` into ``model`` (in place) and return it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: keys or shapes do not match and ``strict`` is True.
    """
    bare = unwrap(model)
    device = next((p.device for p in bare.parameters()), torch.device("cpu"))
    bare.load_state_dict(load_safetensors(path, device="cpu"), strict=strict)
    bare.to(device)
    return model


# ----------------------------------------------------------------------------- nested state
def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON-able skeleton and a flat dict of tensors.

    Args:
        obj: nested dicts/lists/tuples of tensors, NumPy arrays, numbers, strings, None.

    Returns:
        ``(skeleton, tensors)``; :func:`unflatten_state` inverts it exactly.

    Raises:
        TypeError: a leaf of an unsupported type (it would need pickle).
    """
    tensors: dict[str, torch.Tensor] = {}

    def go(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().cpu()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and not any(m in x for m in _MARKERS):
                return {k: go(v) for k, v in x.items()}
            for k in x:
                if not isinstance(k, str | int | float | bool) and k is not None:
                    raise TypeError(f"cannot store dict key of type {type(k).__name__}")
            return {"__items__": [[k, go(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [go(v) for v in x]}
        if isinstance(x, list):
            return [go(v) for v in x]
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(
            f"cannot store a {type(x).__name__} in a checkpoint without pickle; "
            "state_dict() must contain only tensors, arrays, numbers, strings and containers"
        )

    return go(obj), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def go(x: Any) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__items__" in x:
                return {k: go(v) for k, v in x["__items__"]}
            if "__tuple__" in x:
                return tuple(go(v) for v in x["__tuple__"])
            if "__ndarray__" in x:
                return np.asarray(x["__ndarray__"], dtype=x["dtype"])
            return {k: go(v) for k, v in x.items()}
        if isinstance(x, list):
            return [go(v) for v in x]
        return x

    return go(skeleton)


# ----------------------------------------------------------------------------- checkpoint dirs
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    """Path of the checkpoint for ``step`` under ``root`` (``root/step_00000123``)."""
    return Path(root) / f"step_{step:08d}"


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write a complete checkpoint directory atomically (see module docstring).

    Args:
        root: directory holding all checkpoints (``<out_dir>/checkpoints``).
        step: the global step; names the directory.
        model: the model (DDP wrappers are removed).
        state: nested training state (optimizer/scheduler ``state_dict``, RNG, counters, ...).
        keep_last: afterwards delete all but the newest ``keep_last`` checkpoints (None/0: keep all).

    Returns:
        The final checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    # leftovers of a writer killed mid-save (one writer per root: rank 0 of one run)
    for junk in root.glob(".tmp_step_*"):
        shutil.rmtree(junk, ignore_errors=True)
    for junk in root.glob(".old_step_*"):
        shutil.rmtree(junk, ignore_errors=True)
    skeleton, tensors = flatten_state(state)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{final.name}_", dir=root))
    try:
        save_model(model, tmp / "model.safetensors")
        save_safetensors(tensors, tmp / "state.safetensors", metadata={"format": "kexue-state"})
        atomic_write_text(
            tmp / "state.json", json.dumps({"version": FORMAT_VERSION, "state": skeleton})
        )
        files = {
            name: (tmp / name).stat().st_size
            for name in ("model.safetensors", "state.safetensors", "state.json")
        }
        # The manifest goes last: a directory without a valid manifest is never loaded.
        atomic_write_text(
            tmp / "manifest.json",
            json.dumps({"version": FORMAT_VERSION, "step": step, "files": files}),
        )
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. after a resume): move the old one aside
            trash = Path(tempfile.mkdtemp(prefix=f".old_{final.name}_", dir=root))
            os.replace(final, trash / final.name)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_valid_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` has a manifest whose listed files all exist with the listed sizes."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        return all((path / n).stat().st_size == size for n, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Valid checkpoint directories under ``root``, oldest first (temporaries are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and is_valid_checkpoint(p):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """Newest valid checkpoint directory under ``root``, or None."""
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None) -> dict[str, Any]:
    """Read a checkpoint directory; optionally load its weights into ``model`` (in place).

    Returns:
        The nested training state passed to :func:`save_checkpoint` (tensors on CPU).

    Raises:
        FileNotFoundError: ``path`` is not a complete checkpoint (missing/mismatched manifest).
    """
    path = Path(path)
    if not is_valid_checkpoint(path):
        raise FileNotFoundError(
            f"not a complete checkpoint (missing or mismatched manifest): {path}"
        )
    if model is not None:
        load_model(model, path / "model.safetensors")
    payload = json.loads((path / "state.json").read_text())
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint version {payload.get('version')} in {path}")
    return unflatten_state(payload["state"], load_safetensors(path / "state.safetensors"))
