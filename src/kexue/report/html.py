"""Static HTML pages for the report: one per experiment plus an index. No JavaScript, no CDN.

Every string that comes from a result (or from a user, e.g. a failure message carrying a typed
override key) is HTML-escaped first; only then are the two inline markdown forms the results use
(```code``` and ``**bold**``) turned into tags, so no markup a result carries can reach the page.
"""

from __future__ import annotations

import html
import re
from typing import Any

from kexue.report.markdown import (
    COMPARISON_COLUMNS,
    SCALE_LABEL,
    comparison_rows,
    fmt,
    key_value_tables,
)
from kexue.report.result import Result

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
.scale{padding:.4em .7em;background:#fff8e1;border-left:4px solid #d69e2e}
.scale.quick,.scale.full{background:#f0fff4;border-color:#38a169}
"""

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def inline(text: Any) -> str:
    """Escape ``text`` for HTML, then render ```code``` and ``**bold**`` (nothing else)."""
    s = html.escape(fmt(text))
    s = _CODE.sub(r"<code>\1</code>", s)
    return _BOLD.sub(r"<b>\1</b>", s)


def _cell(c: Any) -> str:
    cls = ' class="num"' if isinstance(c, int | float) and not isinstance(c, bool) else ""
    return f"<td{cls}>{inline(c)}</td>"


def table_html(columns: list[str], rows: list[list[Any]]) -> str:
    """An HTML table with right-aligned numbers; every cell escaped."""
    head = "".join(f"<th>{inline(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    """Wrap ``body`` in a standalone HTML document (``title`` is escaped)."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def section_html(res: Result | dict[str, Any], image_prefix: str = "") -> str:
    """HTML fragment for one experiment (same content as the markdown section)."""
    if not isinstance(res, Result):
        res = Result.from_json(res)
    e = html.escape
    p = res.provenance
    name = p.name if p else "experiment"
    parts = [f'<h2 id="{e(name)}">{e(name)}</h2>']
    if p:
        parts += [
            f'<p class="meta">Article: {inline(p.article)}<br>Part: <code>{e(p.part)}</code> — '
            f"{inline(p.summary)}</p>",
            f'<p class="scale {e(p.scale)}">{e(SCALE_LABEL[p.scale])}</p>',
        ]
    parts.append(f'<p class="headline">{inline(res.headline)}</p>')
    if res.comparison:
        parts += ["<h3>Article vs ours</h3>", table_html(COMPARISON_COLUMNS, comparison_rows(res))]
    for t in res.tables:
        parts += [f"<h3>{inline(t.title)}</h3>", table_html(t.columns, t.rows)]
        if t.caption:
            parts.append(f'<p class="meta">{inline(t.caption)}</p>')
    for plot in res.plots:
        cap = inline(plot.caption)
        parts.append(
            f'<figure><img src="{e(image_prefix + plot.file)}" alt="{e(plot.caption or plot.file)}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    if res.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{inline(n)}</li>" for n in res.notes))
        parts[-1] += "</ul>"
    for label, cols, rows in key_value_tables(res):
        parts.append(f"<details><summary>{e(label)}</summary>{table_html(cols, rows)}</details>")
    if p:
        env = p.environment
        parts.append(
            f'<p class="meta">scale {e(p.scale)}, wall time {e(fmt(p.wall_time_s))} s, '
            f"torch {e(str(env.get('torch', '?')))}, {e(str(env.get('torch_threads', '?')))} threads, "
            f"{e(str(env.get('platform', '?')))}</p>"
        )
    return "\n".join(parts)
