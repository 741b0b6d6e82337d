"""Assemble a report directory from experiment run directories.

Layout written by :func:`build_report`::

    report/
      index.html        every experiment: headline table + full sections with plots
      README.md         the same in markdown
      <name>/           one run directory per experiment (results.json, config.json, *.png, section.md)
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from kexue.core.io import atomic_write_text
from kexue.report.html import page, section_html, table_html
from kexue.report.markdown import render_section, table_md
from kexue.report.result import Cell, Result


def load_results(run_dir: str | Path) -> Result:
    """Read and validate ``run_dir/results.json``; ``ValueError`` names a corrupt or foreign file."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {run_dir}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a valid results.json ({exc})") from None
    res = Result.from_json(obj, source=str(path))
    if res.provenance is None:
        raise ValueError(f"{path}: results.json has no provenance (name, scale, ...)")
    res.validate(run_dir)
    return res


def _overview(all_results: list[Result]) -> tuple[list[str], list[list[Cell]]]:
    cols = ["experiment", "part", "scale", "finding", "wall time (s)"]
    rows: list[list[Cell]] = []
    for r in all_results:
        p = r.provenance
        assert p is not None
        rows.append([p.name, p.part, p.scale, r.headline, p.wall_time_s])
    return cols, rows


def build_report(out_dir: str | Path, failures: dict[str, str] | None = None) -> Path:
    """Write ``index.html`` and ``README.md`` for every ``out_dir/*/results.json``.

    Args:
        out_dir: the report directory holding one run directory per experiment.
        failures: experiment name -> one-line error, listed on the index (nothing is hidden).

    Returns:
        Path of ``index.html``.
    """
    out = Path(out_dir)
    runs = sorted(p.parent for p in out.glob("*/results.json"))
    all_results = [load_results(r) for r in runs]
    cols, rows = _overview(all_results)
    intro = (
        "Each section reproduces one Scientific Spaces (kexue.fm) article with `kexue`. "
        "Numbers come from this machine; the article's figures stand beside ours."
    )
    md = ["# kexue report", "", intro, "", table_md(cols, rows), ""]
    body = ["<h1>kexue report</h1>", f"<p>{intro}</p>", table_html(cols, rows)]
    if failures:
        md += (
            ["## Failed experiments", ""] + [f"- **{k}**: {v}" for k, v in failures.items()] + [""]
        )
        body.append(
            "<h2>Failed experiments</h2><ul>"
            + "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in failures.items()
            )
            + "</ul>"
        )
    for run, res in zip(runs, all_results, strict=True):
        prefix = f"{run.name}/"
        md.append(render_section(res, image_prefix=prefix))
        body.append(section_html(res, image_prefix=prefix))
        # a standalone page per experiment, images relative to its own directory
        atomic_write_text(run / "index.html", page(run.name, section_html(res)))
    atomic_write_text(out / "README.md", "\n".join(md))
    index = out / "index.html"
    atomic_write_text(index, page("kexue report", "\n".join(body)))
    return index
