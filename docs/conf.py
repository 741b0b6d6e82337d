"""Sphinx configuration of the kexue docs site (``make docs`` -> docs/_build/html).

Sphinx, not MkDocs: autodoc + napoleon read the Google-style docstrings and ``:math:`` roles the
code already has, MyST renders the Markdown pages that the README's generated blocks also use,
and it is what PyTorch and most of its ecosystem build their references with. Warnings are
errors (``-W``): a broken reference, a public name without a docstring or a CLI page that does
not match argparse fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))

project = "kexue"
author = "the kexue authors"
copyright = "2026, the kexue authors"  # noqa: A001 (Sphinx's name)
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "kexue_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "results", "_ext"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
html_title = "kexue"
html_static_path: list[str] = []
napoleon_use_ivar = True
