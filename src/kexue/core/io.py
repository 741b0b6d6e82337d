"""Atomic file writes and safetensors checkpoints.

Nothing is lost: every write goes to a temporary file in the target directory, is flushed and
fsync'ed, then renamed over the target (``os.replace`` is atomic on POSIX), so a crash leaves
either the old file or the new one, never a torn one.

Permissions: ``tempfile.mkstemp`` creates its file with mode 0600; the result is given the mode a
plain ``open(path, "w")`` would give a new file (``0666 & ~umask``, i.e. 0644 under the usual
umask 022), so reports and weights are readable like any other output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore (briefly process-wide)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode ``open(path, "w")`` would give a new file: ``0666 & ~umask`` (``mkstemp`` gives 0600)."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """Mode ``os.mkdir`` would give a new directory: ``0777 & ~umask`` (``mkdtemp`` gives 0700)."""
    return 0o777 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    The file gets mode ``0666 & ~umask``, as ``open(path, "w")`` would give a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (non-finite floats become ``null``)."""
    return atomic_write_text(
        path, json.dumps(_finite(obj), indent=2, ensure_ascii=False, default=str) + "\n"
    )


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def save_safetensors(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save a flat dict of tensors as safetensors, atomically.

    Tensors are made contiguous and detached; shared storage (tied weights) is cloned so
    safetensors accepts it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    mode = default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(clean, tmp, metadata=metadata)
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_safetensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no pickle, safe for untrusted files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return load_file(str(path), device=str(device))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def swap_in_dir(tmp: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Atomically make the finished directory ``tmp`` become ``directory``.

    Entries of an existing ``directory`` that ``tmp`` does not hold (training checkpoints, a
    user's files) are moved into ``tmp`` first, then the old directory is renamed away and
    ``tmp`` renamed into place; on any error those entries are put back, the old files are left
    as they were and ``tmp`` is removed. ``tmp`` must be a sibling of ``directory`` (same file
    system). Returns ``directory``.
    """
    import shutil

    tmp, d = Path(tmp), Path(directory)
    moved: list[str] = []
    try:
        if d.exists():
            for entry in d.iterdir():
                if not (tmp / entry.name).exists():
                    os.rename(entry, tmp / entry.name)
                    moved.append(entry.name)
            old = Path(tempfile.mkdtemp(prefix=f".{d.name}.", suffix=".old", dir=d.parent))
            os.rename(d, old / "previous")
            os.rename(tmp, d)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, d)
    except BaseException:
        if d.is_dir():  # put the other entries back; the old model files are untouched
            for name in moved:
                if (tmp / name).exists():
                    os.rename(tmp / name, d / name)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d


@contextlib.contextmanager
def staged_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Write a directory's files into a fresh sibling, then swap it in atomically.

    ``with staged_dir(d) as tmp:`` yields an empty temporary sibling of ``d``; when the block
    ends without error ``tmp`` gets the default directory mode and replaces ``d`` through
    :func:`swap_in_dir` (entries of the old ``d`` that ``tmp`` lacks are kept); on error ``tmp``
    is removed and ``d`` is untouched.

    Raises:
        ValueError: ``directory`` exists and is not a directory.
    """
    import shutil

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d} exists and is not a directory")
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", suffix=".tmp", dir=d.parent))
    try:
        yield tmp
        os.chmod(tmp, default_dir_mode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in_dir(tmp, d)


def check_out_dir(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> Path:
    """The rule every ``--out`` of a training command follows; returns ``Path(out)``.

    Refuses (``ValueError``, naming ``--out``) a path that is a file, ``resume`` together with
    ``overwrite``, and a non-empty directory unless one of them is given: a user's earlier run
    is never replaced without ``--overwrite``. Deleting or resuming is left to the caller.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if path.is_dir() and any(path.iterdir()) and not (resume or overwrite):
        raise ValueError(
            f"--out {path} already exists and is not empty; pass --overwrite to replace it "
            "or --resume to continue an interrupted run"
        )
    return path


DIR_MANIFEST = "kexue_manifest.json"


def write_dir_manifest(
    directory: str | os.PathLike, *, extra: dict[str, Any] | None = None, name: str = DIR_MANIFEST
) -> Path:
    """Record the size and SHA-256 of every regular file directly in ``directory`` (not in its
    sub-directories, such as training checkpoints, which carry their own manifests; the
    manifest itself and hidden files excluded) in ``directory/name``, atomically.

    ``extra`` (any JSON object) is stored beside the file table under its own keys; it must not
    use the key ``"files"``.

    Returns:
        The manifest's path.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    files = {}
    for p in sorted(root.iterdir()):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != name and not rel.startswith("."):
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    extra = dict(extra or {})
    if "files" in extra:
        raise ValueError("extra must not use the key 'files'")
    return atomic_write_json(root / name, {**extra, "files": files})


def verify_dir_manifest(
    directory: str | os.PathLike, *, name: str = DIR_MANIFEST, required: bool = False
) -> dict[str, Any] | None:
    """Check every file listed in ``directory/name`` against its recorded size and SHA-256.

    Args:
        directory: a directory written with :func:`write_dir_manifest`.
        name: the manifest's file name.
        required: raise when there is no manifest (else return ``None``: directories written
            before manifests existed, or by other tools, still load).

    Returns:
        The manifest (``None`` when absent and not ``required``).

    Raises:
        ValueError: a one-line message naming the first missing, resized or changed file, or a
            manifest that is not valid JSON.
        FileNotFoundError: no manifest and ``required``.
    """
    root = Path(directory)
    mf = root / name
    if not mf.is_file():
        if required:
            raise FileNotFoundError(f"{root}: no {name} (not a kexue model directory)")
        return None
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        files = manifest["files"]
        items = [(k, int(v["size"]), str(v["sha256"])) for k, v in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{mf}: corrupt manifest (not the JSON kexue writes)") from None
    for rel, size, digest in items:
        p = root / rel
        if not p.is_file():
            raise ValueError(f"{p}: missing (listed in {mf.name})")
        if p.stat().st_size != size:
            raise ValueError(f"{p}: corrupt or truncated (size differs from {mf.name})")
        if sha256_file(p) != digest:
            raise ValueError(f"{p}: corrupt (sha256 differs from {mf.name})")
    return manifest
