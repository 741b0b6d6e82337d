"""``metrics.jsonl`` (one JSON object per line) and running means between log events."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kexue.core.io import atomic_write_text


def to_float(value: Any, name: str) -> float:
    """A Python float from a number or a one-element tensor; ``ValueError`` otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.detach().item())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}") from None


class MetricsLog:
    """Append-only JSON-lines log; a no-op when ``path`` is None (e.g. on ranks other than 0)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = None if path is None else Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as a line (flushed; NaN/inf written as JSON ``NaN``/``Infinity``)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record), allow_nan=True) + "\n")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (and drop a torn last line), atomically."""
        if self.path is None or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a line torn by a crash
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def clear(self) -> None:
        """Delete the log file if it exists."""
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def read(self) -> list[dict[str, Any]]:
        """All records (empty when there is no file)."""
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x]


class RunningMeans:
    """Sums of per-step values between log events.

    CPU tensors are read at once (``item()`` costs less than keeping a tensor sum); tensors on an
    accelerator stay there until :meth:`means`, so logging never forces a per-step sync.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, values: Mapping[str, Any]) -> None:
        """Add one step's values (floats or one-element tensors)."""
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"metric {k!r} must be a scalar, got shape {tuple(v.shape)}")
                if v.device.type == "cpu":
                    v = float(v.item())  # a host read is cheaper than three small tensor ops
                else:  # accelerators: stay on device, one transfer at the log event
                    v = v.detach().float().reshape(())
            else:
                v = to_float(v, k)
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        """Mean of every key over the steps added since the last :meth:`reset`."""
        return {k: to_float(v, k) / self.count for k, v in self.sums.items()}

    def reset(self) -> None:
        """Start a new window."""
        self.sums, self.count = {}, 0
