"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a directory ``<out_dir>/checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors`` - the bare model's ``state_dict`` (DDP prefixes removed);
* ``state.safetensors`` - every tensor found in the training state (optimizer moments, RNG
  states, scheduler tensors), keyed ``t0, t1, ...``;
* ``state.json`` - the rest of the training state (step, epoch, position in the epoch, config,
  optimizer/scheduler structure) with ``{"__tensor__": "tK"}`` placeholders for the tensors;
* ``manifest.json`` - name, size and SHA-256 of each file above, written last.

Atomicity: the files are written into a hidden temporary directory next to the final one, each
fsync'ed, the manifest last, and the directory is then renamed into place (``os.rename`` is atomic
on POSIX). A reader only accepts directories named ``step_*`` whose manifest matches the files, so
a crash at any point leaves the previous checkpoint as the newest valid one.

Integrity: :func:`checkpoint_problem` checks every listed file's size and SHA-256 (a truncated
file, a same-size corrupted header or ``state.json``, a single flipped bit in the weights), and
:func:`load_checkpoint` reads and parses everything before it touches the model, raising
:class:`CorruptCheckpointError` with one line naming the file. The Trainer then falls back to the
newest checkpoint that passes (:func:`newest_valid_checkpoint`). Manifests written before hashes
were added (``"files": {name: size}``) are still accepted on sizes alone.

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

from kexue.core.io import (
    atomic_write_text,
    default_dir_mode,
    load_safetensors,
    save_safetensors,
    sha256_file,
)
from kexue.train.distributed import unwrap

FORMAT_VERSION = 1  # of state.json
MANIFEST_VERSION = 2  # 1: sizes only; 2: sizes and sha256
_FILES = ("model.safetensors", "state.safetensors", "state.json")
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
        CorruptCheckpointError: ``path`` is not a readable safetensors file.
        ValueError: keys (``strict``) or shapes do not match the model (one line naming the file).
    """
    path = Path(path)
    weights = _read_safetensors(path)
    apply_weights(model, weights, path, strict)
    return model


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return load_safetensors(path, device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError / OSError types
        raise CorruptCheckpointError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'})"
        ) from None


def apply_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], path: Path, strict: bool = True
) -> None:
    """Load a weights dict read from ``path`` into ``unwrap(model)``, in place.

    Raises:
        ValueError: shapes differ, or (``strict``) keys are missing or unexpected: one line
            naming ``path`` and the first few offending keys.
    """
    bare = unwrap(model)
    own = bare.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]

    def few(xs: list[str]) -> str:
        return ", ".join(xs[:3]) + (f" (+{len(xs) - 3} more)" if len(xs) > 3 else "")

    problems = [f"shape mismatch: {few(shapes)}"] if shapes else []
    if strict and missing:
        problems.append(f"missing keys: {few(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if problems:
        raise ValueError(f"{path} holds weights of another model ({'; '.join(problems)})")
    device = next((p.device for p in bare.parameters()), torch.device("cpu"))
    bare.load_state_dict(weights, strict=strict)
    bare.to(device)


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


class CorruptCheckpointError(ValueError):
    """A checkpoint directory is incomplete or its content does not match its manifest."""


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
        os.chmod(tmp, default_dir_mode())  # mkdtemp makes it 0700
        save_model(model, tmp / "model.safetensors")
        save_safetensors(tensors, tmp / "state.safetensors", metadata={"format": "kexue-state"})
        atomic_write_text(
            tmp / "state.json", json.dumps({"version": FORMAT_VERSION, "state": skeleton})
        )
        files = {
            name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
            for name in _FILES
        }
        # The manifest goes last: a directory without a valid manifest is never loaded.
        atomic_write_text(
            tmp / "manifest.json",
            json.dumps({"version": MANIFEST_VERSION, "step": step, "files": files}),
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
        for old in list_checkpoints(root, verify=False)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_problem(path: str | os.PathLike, verify: bool = True) -> str | None:
    """What is wrong with the checkpoint directory ``path``, in one line; None if it is valid.

    Args:
        path: a ``step_*`` checkpoint directory.
        verify: also compare each file's SHA-256 with the manifest (False: sizes only, cheap).

    Returns:
        None, or e.g. ``"model.safetensors: sha256 differs from the manifest (corrupt)"``.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest.json (incomplete)"
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"manifest.json is unreadable ({type(err).__name__})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or any(name not in files for name in _FILES):
        return f"manifest.json does not list {', '.join(_FILES)}"
    for name, entry in files.items():
        if isinstance(entry, int) and not isinstance(entry, bool):  # manifest version 1
            entry = {"size": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            return f"manifest.json has no size for {name}"
        try:
            size = (path / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != entry["size"]:
            return f"{name} has {size} bytes, the manifest says {entry['size']} (truncated?)"
        try:
            digest = sha256_file(path / name) if verify and "sha256" in entry else None
        except OSError as err:
            return f"{name} is unreadable ({type(err).__name__})"
        if digest is not None and digest != entry["sha256"]:
            return f"{name}: sha256 differs from the manifest (corrupt)"
    return None


def is_valid_checkpoint(path: str | os.PathLike, verify: bool = True) -> bool:
    """True when :func:`checkpoint_problem` finds nothing wrong with ``path``."""
    return checkpoint_problem(path, verify=verify) is None


def _step_dirs(root: Path) -> list[Path]:
    """``step_*`` directories under ``root``, oldest first, valid or not."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def list_checkpoints(root: str | os.PathLike, verify: bool = True) -> list[Path]:
    """Valid checkpoint directories under ``root``, oldest first (temporaries are ignored).

    Args:
        root: the checkpoints directory.
        verify: check content hashes too (False: manifest and sizes only).
    """
    return [p for p in _step_dirs(Path(root)) if is_valid_checkpoint(p, verify=verify)]


def checkpoint_dirs(root: str | os.PathLike) -> list[Path]:
    """Every ``step_*`` directory under ``root``, oldest first, valid or not."""
    return _step_dirs(Path(root))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """Newest valid checkpoint directory under ``root`` (hashes verified), or None."""
    return newest_valid_checkpoint(root)[0]


def newest_valid_checkpoint(root: str | os.PathLike) -> tuple[Path | None, list[str]]:
    """Newest checkpoint under ``root`` that passes :func:`checkpoint_problem`, and what was skipped.

    Only as many checkpoints are hashed as needed (newest first).

    Returns:
        ``(path or None, ["step_00000008: model.safetensors: sha256 differs ...", ...])``: the
        newer directories that were skipped, newest first, each with its problem.
    """
    skipped = []
    for p in reversed(_step_dirs(Path(root))):
        problem = checkpoint_problem(p)
        if problem is None:
            return p, skipped
        skipped.append(f"{p.name}: {problem}")
    return None, skipped


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check everything in a checkpoint directory without touching any model.

    Returns:
        ``(model weights, training state)``, all tensors on CPU.

    Raises:
        FileNotFoundError: ``path`` is not a directory.
        CorruptCheckpointError: incomplete, content differs from the manifest, or unparsable.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CorruptCheckpointError(f"checkpoint {path} is not usable: {problem}")
    weights = _read_safetensors(path / "model.safetensors")
    tensors = _read_safetensors(path / "state.safetensors")
    try:
        payload = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptCheckpointError(
            f"{path / 'state.json'} is not valid JSON ({type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        version = payload.get("version") if isinstance(payload, dict) else None
        raise CorruptCheckpointError(f"unsupported checkpoint version {version} in {path}")
    try:
        state = unflatten_state(payload["state"], tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptCheckpointError(
            f"{path / 'state.json'} does not match {path / 'state.safetensors'} "
            f"({type(err).__name__}: {err})"
        ) from None
    return weights, state


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None) -> dict[str, Any]:
    """Read a checkpoint directory; optionally load its weights into ``model`` (in place).

    Everything is read and checked first, so ``model`` is untouched when this raises.

    Returns:
        The nested training state passed to :func:`save_checkpoint` (tensors on CPU).

    Raises:
        FileNotFoundError: ``path`` is not a directory.
        CorruptCheckpointError: ``path`` is incomplete or corrupt (see :func:`checkpoint_problem`).
        ValueError: the weights belong to another model.
    """
    weights, state = read_checkpoint(path)
    if model is not None:
        apply_weights(model, weights, Path(path) / "model.safetensors", strict=True)
    return state
