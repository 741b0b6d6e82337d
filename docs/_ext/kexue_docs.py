"""Sphinx extension of the kexue docs.

* ``{kexue-cli}`` directive: the reference of every ``kexue`` subcommand, rendered from the
  argparse parser itself (``kexue.cli.build_parser``), so ``--help`` and the docs cannot drift.
* A warning (an error under ``-W``) for every public name that autodoc documents without a
  docstring.
* ``$...$`` / ``$$...$$`` maths in docstrings become ``:math:`` roles and ``.. math::`` blocks.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

LOG = logging.getLogger(__name__)


def _walk(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for action in parser._actions:  # argparse keeps subparsers here only
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, [*path, name])


class KexueCli(Directive):
    """One section per (sub)command: its description and its ``--help`` text."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from kexue.cli import build_parser

        out: list[nodes.Node] = []
        for path, parser in _walk(build_parser(), ["kexue"]):
            name = " ".join(path)
            sec = nodes.section(ids=[nodes.make_id(name)], names=[nodes.fully_normalize_name(name)])
            sec += nodes.title(text=name)
            text = parser.format_help().replace(parser.prog, name, 1)
            sec += nodes.literal_block(text, text)
            out.append(sec)
        return out


_DISPLAY = re.compile(r"\$\$(.+?)\$\$", flags=re.S)
_INLINE = re.compile(r"(?<![$\\])\$(?!\$)((?:[^$\n]|\n(?!\s*\n))+?)(?<!\\)\$")


def _dollar_math(lines: list[str]) -> None:
    """Docstrings write maths as ``$...$`` and ``$$...$$`` (readable in source and in
    ``help()``); reStructuredText needs ``:math:`` roles and ``.. math::`` blocks."""
    text = "\n".join(lines)
    if "$" not in text:
        return

    def display(m: re.Match) -> str:
        body = " ".join(m.group(1).split())
        return f"\n\n.. math::\n\n   {body}\n\n"

    text = _DISPLAY.sub(display, text)
    text = _INLINE.sub(lambda m: f":math:`{' '.join(m.group(1).split())}`", text)
    lines[:] = text.split("\n")


def _process_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list) -> None:
    _dollar_math(lines)
    short = name.rsplit(".", 1)[-1]
    if short.startswith("_") or what in ("attribute", "data", "property"):
        return
    if not any(line.strip() for line in lines):
        LOG.warning("public %s %s has no docstring", what, name, type="kexue", subtype="docstring")


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("kexue-cli", KexueCli)
    app.connect("autodoc-process-docstring", _process_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
