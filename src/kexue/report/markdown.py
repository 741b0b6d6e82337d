"""Render one experiment's :class:`~kexue.report.result.Result` as a markdown section."""

from __future__ import annotations

import math
from typing import Any

from kexue.report.result import Result

SCALE_LABEL = {
    "smoke": "smoke scale: a plumbing check of seconds on tiny data; its numbers say nothing "
    "about the article's claim",
    "quick": "quick scale: minutes on 2 CPU cores, reduced data and steps",
    "full": "full scale: the article's setting as far as this machine allows",
}


def fmt(cell: Any) -> str:
    """Format a cell as text: floats to 4 significant digits (ints stay ints), None as an em dash."""
    if cell is None:
        return "—"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        if math.isnan(cell):
            return "nan"
        if math.isinf(cell):
            return "inf" if cell > 0 else "-inf"
        if cell == 0 or 1e-3 <= abs(cell) < 1e5:
            return f"{cell:.4g}"
        return f"{cell:.3e}"
    return str(cell).replace("\n", " ")


def _md_cell(cell: Any) -> str:
    return fmt(cell).replace("|", "\\|")


def table_md(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""
    head = "| " + " | ".join(_md_cell(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


COMPARISON_COLUMNS = ["quantity", "article", "ours", "verdict", "note"]


def comparison_rows(res: Result) -> list[list[Any]]:
    """The article-vs-ours rows, one list per :class:`~kexue.report.result.Comparison`."""
    return [[c.quantity, c.article, c.ours, c.verdict, c.note] for c in res.comparison]


def key_value_tables(res: Result) -> list[tuple[str, list[str], list[list[Any]]]]:
    """``(label, columns, rows)`` for the non-empty metrics (key, label, value) and config tables."""
    out: list[tuple[str, list[str], list[list[Any]]]] = []
    if res.metrics:
        rows = [[k, res.labels.get(k, ""), v] for k, v in res.metrics.items()]
        out.append(("Key metrics", ["metric", "label", "value"], rows))
    config = res.provenance.config if res.provenance else {}
    if config:
        rows = [
            [k, v if isinstance(v, int | float | str) or v is None else str(v)]
            for k, v in config.items()
        ]
        out.append(("Configuration", ["field", "value"], rows))
    return out


def _as_result(res: Result | dict[str, Any]) -> Result:
    return res if isinstance(res, Result) else Result.from_json(res)


def render_section(res: Result | dict[str, Any], image_prefix: str = "") -> str:
    """Markdown for one experiment: headline, article-vs-ours, tables, plots, notes, provenance.

    Args:
        res: a :class:`Result` (or its ``to_json`` dict) with provenance filled by the runner.
        image_prefix: path prefix for plot files (e.g. ``"init-geometry/"`` from the index page).
    """
    res = _as_result(res)
    p = res.provenance
    lines = [f"## {p.name if p else 'experiment'}", ""]
    if p:
        lines += [f"*Article:* {p.article}  ", f"*Part:* `{p.part}` — {p.summary}", ""]
        lines += [f"> {SCALE_LABEL[p.scale]}", ""]
    lines += [f"**{res.headline}**", ""]
    if res.comparison:
        lines += ["### Article vs ours", "", table_md(COMPARISON_COLUMNS, comparison_rows(res)), ""]
    for t in res.tables:
        lines += [f"### {t.title}", "", table_md(t.columns, t.rows), ""]
        if t.caption:
            lines += [f"*{t.caption}*", ""]
    for plot in res.plots:
        lines += [f"![{plot.caption or plot.file}]({image_prefix}{plot.file})", ""]
        if plot.caption:
            lines += [f"*{plot.caption}*", ""]
    if res.notes:
        lines += ["### Notes", ""] + [f"- {n}" for n in res.notes] + [""]
    for label, cols, rows in key_value_tables(res):
        lines += [f"<details><summary>{label}</summary>", "", table_md(cols, rows)]
        lines += ["", "</details>", ""]
    if p:
        env = p.environment
        lines += [
            f"<sub>scale `{p.scale}`, wall time {fmt(p.wall_time_s)} s, "
            f"torch {env.get('torch', '?')}, {env.get('torch_threads', '?')} threads, "
            f"{env.get('platform', '?')}</sub>",
            "",
        ]
    return "\n".join(lines)
