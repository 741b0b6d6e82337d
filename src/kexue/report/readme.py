"""README results blocks generated from runs, so that every number in them was computed by a run.

``make readme`` (after ``make report``) calls :func:`update_readme`: for each
``report/<name>/results.json`` it stores a snapshot ``docs/results/<scale>/<name>.json`` (the
result without the machine-specific environment) and rewrites the README's block between

    <!-- kexue:results NAME SCALE -->
    ...
    <!-- /kexue:results -->

with :func:`readme_block` of that result: the headline and the article-vs-ours table.
``tests/test_readme.py`` re-renders every block from its committed snapshot and fails if the
README differs, so a README number cannot be typed in by hand or go stale silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kexue.core.io import atomic_write_json, atomic_write_text
from kexue.report.build import load_results
from kexue.report.markdown import COMPARISON_COLUMNS, comparison_rows, fmt, table_md
from kexue.report.result import Result

BLOCK = re.compile(
    r"<!-- kexue:results (?P<name>[a-z0-9-]+) (?P<scale>smoke|quick|full) -->\n"
    r"(?P<body>.*?)<!-- /kexue:results -->",
    flags=re.S,
)


def readme_block(res: Result) -> str:
    """The README's markdown for one result: provenance line, headline, article-vs-ours table."""
    p = res.provenance
    if p is None:
        raise ValueError("readme_block needs a result with provenance (run it through reproduce)")
    lines = [
        f"`kexue reproduce {p.name} --scale {p.scale}` — {fmt(p.wall_time_s)} s on "
        f"{p.environment.get('torch_threads', '?')} thread(s), torch {p.environment.get('torch', '?')}",
        "",
        f"{res.headline}",
        "",
        table_md(COMPARISON_COLUMNS, comparison_rows(res)),
        "",
    ]
    return "\n".join(lines)


def snapshot(res: Result) -> dict:
    """What is committed for the README check: the result as JSON, environment reduced."""
    obj = res.to_json()
    env = obj.get("environment", {})
    obj["environment"] = {k: env[k] for k in ("torch", "torch_threads", "cuda") if k in env}
    return obj


def load_snapshot(path: str | Path) -> Result:
    """Read a snapshot written by :func:`update_readme`; ``ValueError`` names a bad file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read snapshot ({exc})") from None
    return Result.from_json(obj, source=str(path))


def blocks(text: str) -> list[tuple[str, str, str]]:
    """``(name, scale, body)`` of every results block in a README text."""
    return [(m["name"], m["scale"], m["body"]) for m in BLOCK.finditer(text)]


def update_readme(readme: str | Path, results_dir: str | Path, snapshots: str | Path) -> list[str]:
    """Refresh README blocks (and snapshots) from ``results_dir/*/results.json``.

    Only blocks already present in the README are rewritten (add a block's two marker lines
    once, by hand, to place it); a block without a new run is re-rendered from its committed
    snapshot, if there is one. Returns the names of the blocks updated.
    """
    readme, results_dir, snapshots = Path(readme), Path(results_dir), Path(snapshots)
    text = readme.read_text(encoding="utf-8")
    found: dict[tuple[str, str], Result] = {}
    for path in sorted(results_dir.glob("*/results.json")):
        res = load_results(path.parent)  # validated, a corrupt file named; provenance required
        found[(res.provenance.name, res.provenance.scale)] = res
    updated: list[str] = []

    def repl(m: re.Match) -> str:
        key = (m["name"], m["scale"])
        snap = snapshots / m["scale"] / f"{m['name']}.json"
        if key in found:
            res = found[key]
            atomic_write_json(snap, snapshot(res))
        elif snap.is_file():  # no new run: re-render from the committed snapshot
            res = load_snapshot(snap)
        else:
            return m.group(0)
        updated.append(m["name"])
        return f"<!-- kexue:results {m['name']} {m['scale']} -->\n{readme_block(res)}<!-- /kexue:results -->"

    atomic_write_text(readme, BLOCK.sub(repl, text))
    return updated


def doc_pages(docs: str | Path) -> list[Path]:
    """The Markdown pages of the docs site that may hold generated blocks (``_build`` and the
    snapshot folder ``results`` excluded), sorted."""
    docs = Path(docs)
    skip = {docs / "_build", docs / "results"}
    return sorted(p for p in docs.rglob("*.md") if not any(s == p or s in p.parents for s in skip))


SUMMARY = re.compile(r"<!-- kexue:summary -->\n(?P<body>.*?)<!-- /kexue:summary -->", flags=re.S)
_PAGES = {
    "kexue.attention": "attention", "kexue.mrc": "mrc", "kexue.vq": "vq", "kexue.optim": "optim",
    "kexue.seq2seq": "seq2seq", "kexue.analysis": "analysis", "kexue.init": "init",
    "kexue.tagging": "tagging",
}  # fmt: skip


def summary_block(snapshots: str | Path, entries: Iterable[Any], scale: str = "quick") -> str:
    """The README's one-screen table: per experiment, its article, what it shows, and the
    verdict counts of its committed ``scale`` snapshot (never typed by hand).

    ``entries``: the experiment registry's entries (``name``, ``article``, ``part``,
    ``summary``), passed in because ``report`` never imports the experiments."""
    rows = []
    for e in entries:
        path = Path(snapshots) / scale / f"{e.name}.json"
        counts: dict[str, int] = {}
        if path.is_file():
            for c in load_snapshot(path).comparison:
                if c.verdict:
                    counts[c.verdict] = counts.get(c.verdict, 0) + 1
            ours = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda x: -x[1]))
        else:
            ours = "no run yet"
        title = e.article.split(" “")[0]
        page = f"docs/parts/{_PAGES[e.part]}.md"
        rows.append([f"`{e.part}`", title, e.summary, ours or "no verdict", f"[{e.name}]({page})"])
    head = ["part", "article", "what the experiment shows", f"verdicts ({scale} run)", "page"]
    return table_md(head, rows) + "\n"


def update_summary(readme: str | Path, snapshots: str | Path, entries: Iterable[Any]) -> bool:
    """Rewrite the ``<!-- kexue:summary -->`` block of ``readme`` (see :func:`summary_block`);
    True if it has one."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if not SUMMARY.search(text):
        return False
    body = summary_block(snapshots, entries)
    new = SUMMARY.sub(lambda m: f"<!-- kexue:summary -->\n{body}<!-- /kexue:summary -->", text)
    if new != text:
        atomic_write_text(readme, new)
    return True
