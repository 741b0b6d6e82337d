"""Run a registered experiment at a preset scale and write its run directory.

A run directory holds ``results.json`` (schema: :mod:`kexue.report.schema`), ``config.json`` (the
resolved config), the experiment's PNG plots and ``section.md`` (its markdown report section).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import platform
import shutil
import sys
import time
import typing
from pathlib import Path
from typing import Any

import torch

import kexue
from kexue.core.io import atomic_write_json, atomic_write_text
from kexue.experiments import get
from kexue.report.result import Provenance, Result

SCALES = ("smoke", "quick", "full")


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["steps=10", "lr=3e-4"]`` -> ``{"steps": "10", "lr": "3e-4"}``; ``ValueError`` on bad items."""
    out: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def _coerce(name: str, raw: str, typ: Any, current: Any) -> Any:
    """Convert a CLI string to the field's type (int, float, bool, str, tuples of those)."""
    if isinstance(typ, str):
        typ = type(current)
    origin = typing.get_origin(typ)
    try:
        if typ is bool or isinstance(current, bool):
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if origin is tuple or isinstance(current, tuple):
            args = typing.get_args(typ)
            elem = args[0] if args else (type(current[0]) if current else str)
            items = [s for s in raw.split(",") if s.strip()]
            return tuple(
                _coerce(name, s.strip(), elem, elem() if callable(elem) else None) for s in items
            )
        if typ is int or isinstance(current, int):
            return int(raw)
        if typ is float or isinstance(current, float):
            return float(raw)
        if current is None and raw.lower() in ("none", "null", ""):
            return None
        return raw
    except (TypeError, ValueError):
        hint = ""
        if origin is tuple or isinstance(current, tuple):
            hint = f" (a tuple is written without brackets: {name}=16,32)"
        raise ValueError(
            f"override {name}={raw!r}: expected {getattr(typ, '__name__', typ)}{hint}"
        ) from None


def resolve_config(module: Any, scale: str, overrides: dict[str, str] | None = None) -> Any:
    """Return ``module.PRESETS[scale]`` with ``overrides`` applied (strings coerced to field types)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    cfg = module.PRESETS[scale]
    if not overrides:
        return cfg
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise ValueError(
                f"unknown config key {key!r} for {module.__name__}; known: {', '.join(fields)}"
            )
        changes[key] = _coerce(key, raw, hints.get(key, str), getattr(cfg, key))
    return dataclasses.replace(cfg, **changes)


def environment() -> dict[str, Any]:
    """Facts about the machine a result came from (for honest comparisons)."""
    return {
        "kexue": kexue.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def reproduce(
    name: str,
    scale: str = "smoke",
    out_dir: str | Path = "runs",
    overrides: dict[str, str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
) -> Result:
    """Run experiment ``name`` at ``scale`` into ``out_dir`` and return its :class:`Result`.

    Writes ``out_dir/results.json``, ``out_dir/config.json`` and ``out_dir/section.md``; the
    experiment itself writes its plots into ``out_dir``. Refuses an ``out_dir`` that is a file,
    and one that holds an earlier run (``config.json`` or ``results.json``) unless ``overwrite``,
    in which case the earlier run directory is removed first, so nothing of it (checkpoints,
    metrics) mixes with the new run.

    ``resume`` continues an interrupted run in ``out_dir``: the stored ``config.json`` must equal
    this run's config (scale and overrides included), there must be no ``results.json`` yet, and
    the experiment's ``run()`` must take a ``resume`` argument (it then reuses the parts that
    finished: training checkpoints, finished sub-runs); otherwise ``ValueError``.
    """
    from kexue.report.markdown import render_section  # report sits beside, not below, experiments

    entry = get(name)
    module = entry.load()
    cfg = resolve_config(module, scale, overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    config = dataclasses.asdict(cfg)
    kwargs = {"resume": True} if resume else {}
    if resume:
        if overwrite:
            raise ValueError("pass either --resume or --overwrite, not both")
        _check_resumable(module, out, config)
    elif (out / "config.json").exists() or (out / "results.json").exists():
        if not overwrite:
            raise ValueError(
                f"--out {out} holds an earlier run; pass --resume to continue it or --overwrite "
                "to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config)
    t0 = time.perf_counter()
    res = module.run(cfg, out, progress=progress, **kwargs)
    wall = time.perf_counter() - t0
    if not isinstance(res, Result):
        raise TypeError(f"{module.__name__}.run() must return kexue.report.Result, got {type(res)}")
    res.provenance = Provenance(
        name=entry.name,
        article=entry.article,
        part=entry.part,
        summary=entry.summary,
        scale=scale,
        config=config,
        environment=environment(),
        wall_time_s=round(wall, 3),
    )
    res.validate(out)
    atomic_write_json(out / "results.json", res.to_json())
    atomic_write_text(out / "section.md", render_section(res))
    return res


def _check_resumable(module: Any, out: Path, config: dict[str, Any]) -> None:
    """Refuse ``resume`` unless ``out`` holds an unfinished run of the same config."""
    if "resume" not in inspect.signature(module.run).parameters:
        raise ValueError(
            f"{module.__name__} cannot resume (its run() has no resume argument); rerun with "
            "--overwrite"
        )
    if (out / "results.json").exists():
        raise ValueError(f"--out {out} holds a finished run; pass --overwrite to redo it")
    path = out / "config.json"
    if not path.exists():
        return  # nothing started yet: a resumed run is a fresh run
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable run config ({e}); pass --overwrite") from None
    want = json.loads(json.dumps(config))  # tuples -> lists, as stored
    if stored != want:
        diff = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
        raise ValueError(
            f"{path} was written with a different config ({', '.join(diff)}); resume needs the "
            "same scale and overrides, or pass --overwrite"
        )
