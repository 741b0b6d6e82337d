"""Plot helpers shared by experiments (matplotlib with the Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


def figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 4.0, **kw: Any):
    """``plt.subplots`` with a consistent size per panel; returns ``(fig, axes)``."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def save(fig: Any, path: str | Path) -> str:
    """Save ``fig`` as PNG (tight layout), close it, and return the file name."""
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path.name
