"""Static HTML pages for the report: one per experiment plus an index. No JavaScript, no CDN."""

from __future__ import annotations

import html
from typing import Any

from kexue.report.markdown import fmt, key_value_tables

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,"Noto Sans CJK SC",sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.5}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.headline{font-size:1.1em;background:#f6f8fa;padding:.7em;
border-left:4px solid #2b6cb0}.meta{color:#666;font-size:.85em}
"""


def _cell(c: Any) -> str:
    cls = ' class="num"' if isinstance(c, int | float) and not isinstance(c, bool) else ""
    return f"<td{cls}>{html.escape(fmt(c))}</td>"


def table_html(columns: list[str], rows: list[list[Any]]) -> str:
    """An HTML table with right-aligned numbers."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    """Wrap ``body`` in a standalone HTML document."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def section_html(results: dict[str, Any], image_prefix: str = "") -> str:
    """HTML fragment for one experiment (same content as the markdown section)."""
    e = html.escape
    parts = [
        f'<h2 id="{e(results["name"])}">{e(results["name"])}</h2>',
        f'<p class="meta">Article: {e(results["article"])}<br>Part: <code>{e(results["part"])}</code> — '
        f"{e(results['summary'])}</p>",
        f'<p class="headline">{e(results["headline"])}</p>',
    ]
    comp = results.get("comparison", [])
    if comp:
        rows = [[r["quantity"], r["article"], r["ours"], r.get("note", "")] for r in comp]
        parts += [
            "<h3>Article vs ours</h3>",
            table_html(["quantity", "article", "ours", "note"], rows),
        ]
    for t in results.get("tables", []):
        parts += [f"<h3>{e(t['title'])}</h3>", table_html(t["columns"], t["rows"])]
    for p in results.get("plots", []):
        cap = e(p.get("caption", ""))
        parts.append(
            f'<figure><img src="{e(image_prefix + p["file"])}" alt="{cap or e(p["file"])}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    if results.get("notes"):
        parts.append(
            "<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in results["notes"]) + "</ul>"
        )
    for label, key, rows in key_value_tables(results):
        parts.append(
            f"<details><summary>{label}</summary>{table_html([key, 'value'], rows)}</details>"
        )
    env = results.get("environment", {})
    parts.append(
        f'<p class="meta">scale {e(str(results.get("scale")))}, wall time {e(fmt(results.get("wall_time_s")))} s, '
        f"torch {e(str(env.get('torch', '?')))}, {e(str(env.get('torch_threads', '?')))} threads, "
        f"{e(str(env.get('platform', '?')))}</p>"
    )
    return "\n".join(parts)
