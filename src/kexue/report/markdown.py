"""Render one experiment's results dict (``results.json``) as a markdown section."""

from __future__ import annotations

import math
from typing import Any


def fmt(cell: Any) -> str:
    """Format a table cell: floats to 4 significant digits (ints stay ints), None as an em dash."""
    if cell is None:
        return "—"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        if math.isnan(cell):
            return "nan"
        if cell == 0 or 1e-3 <= abs(cell) < 1e5:
            return f"{cell:.4g}"
        return f"{cell:.3e}"
    return str(cell).replace("|", "\\|").replace("\n", " ")


def table_md(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    head = "| " + " | ".join(fmt(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def comparison_table(results: dict[str, Any]) -> str:
    """The article-vs-ours rows as a markdown table (empty string if there are none)."""
    rows = [
        [r["quantity"], r["article"], r["ours"], r.get("note", "")]
        for r in results.get("comparison", [])
    ]
    if not rows:
        return ""
    return table_md(["quantity", "article", "ours", "note"], rows)


def key_value_tables(results: dict[str, Any]) -> list[tuple[str, str, list[list[Any]]]]:
    """``(label, key, rows)`` for the non-empty ``metrics`` and ``config`` dicts of a result."""
    out = []
    for label, key in (("Key metrics", "metrics"), ("Configuration", "config")):
        items = results.get(key) or {}
        if items:
            rows = [
                [k, v if isinstance(v, int | float | str) or v is None else str(v)]
                for k, v in items.items()
            ]
            out.append((label, key, rows))
    return out


def render_section(results: dict[str, Any], image_prefix: str = "") -> str:
    """Markdown for one experiment: headline, article-vs-ours, tables, plots, notes, provenance.

    Args:
        results: a results dict as validated by :func:`kexue.report.schema.validate_results`.
        image_prefix: path prefix for plot files (e.g. ``"init-geometry/"`` from the index page).
    """
    lines = [f"## {results['name']}", ""]
    lines += [
        f"*Article:* {results['article']}  ",
        f"*Part:* `{results['part']}` — {results['summary']}",
        "",
    ]
    lines += [f"**{results['headline']}**", ""]
    comp = comparison_table(results)
    if comp:
        lines += ["### Article vs ours", "", comp, ""]
    for table in results.get("tables", []):
        lines += [f"### {table['title']}", "", table_md(table["columns"], table["rows"]), ""]
    for plot in results.get("plots", []):
        lines += [f"![{plot.get('caption', plot['file'])}]({image_prefix}{plot['file']})", ""]
        if plot.get("caption"):
            lines += [f"*{plot['caption']}*", ""]
    if results.get("notes"):
        lines += ["### Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    for label, key, rows in key_value_tables(results):
        lines += [f"<details><summary>{label}</summary>", "", table_md([key, "value"], rows)]
        lines += ["", "</details>", ""]
    env = results.get("environment", {})
    lines += [
        f"<sub>scale `{results.get('scale')}`, wall time {fmt(results.get('wall_time_s'))} s, "
        f"torch {env.get('torch', '?')}, {env.get('torch_threads', '?')} threads, "
        f"{env.get('platform', '?')}</sub>",
        "",
    ]
    return "\n".join(lines)
