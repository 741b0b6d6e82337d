"""The results dict every experiment's ``run()`` returns (and ``results.json`` stores).

Keys an experiment returns (the runner adds name/article/part/summary/scale/config/environment/
wall_time_s)::

    {
      "headline": str,                 # one sentence: the finding, with the key number
      "metrics": {str: float|int|str}, # flat key numbers (used by tests and the index page)
      "comparison": [                  # article vs ours, one row per claim
        {"quantity": str, "article": str, "ours": str, "note": str}
      ],
      "tables": [                      # any further tables
        {"title": str, "columns": [str, ...], "rows": [[cell, ...], ...]}
      ],
      "plots": [                       # PNG files written into the run directory
        {"file": "angles.png", "caption": str}
      ],
      "notes": [str, ...],             # honest remarks: setup differences, bad numbers, caveats
    }

Cells are str/int/float/None; floats are formatted by the renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REQUIRED = ("headline", "metrics", "comparison", "tables", "plots", "notes")


def validate_results(results: dict[str, Any], out_dir: str | Path | None = None) -> None:
    """Raise ``ValueError`` if ``results`` does not follow the schema (and plots are missing)."""
    for key in REQUIRED:
        if key not in results:
            raise ValueError(f"results missing key {key!r}")
    if not isinstance(results["metrics"], dict):
        raise ValueError("results['metrics'] must be a dict")
    for row in results["comparison"]:
        missing = {"quantity", "article", "ours"} - set(row)
        if missing:
            raise ValueError(f"comparison row {row} missing {sorted(missing)}")
    for table in results["tables"]:
        if not {"title", "columns", "rows"} <= set(table):
            raise ValueError(f"table {table.get('title')!r} needs title, columns, rows")
        for r in table["rows"]:
            if len(r) != len(table["columns"]):
                raise ValueError(
                    f"table {table['title']!r}: row {r} has {len(r)} cells, expected {len(table['columns'])}"
                )
    for plot in results["plots"]:
        if "file" not in plot:
            raise ValueError(f"plot entry {plot} needs a 'file'")
        if out_dir is not None and not (Path(out_dir) / plot["file"]).is_file():
            raise ValueError(f"plot file {plot['file']!r} was not written to {out_dir}")
