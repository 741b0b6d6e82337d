"""The dependency direction of ../shared/ARCHITECTURE.md (and the README's Layout), enforced.

core <- plumbing (data, train, lm, report) and the eight parts <- experiments <- cli, file by
file:

* a part's algorithm modules import only torch, ``core`` and their own part (seq2seq, mrc and
  tagging's Transformer encoder also build on ``attention``);
* a part's ``recipe.py`` (examples, fit, evaluate) and ``cli.py`` are the only modules of the part
  that may also import the plumbing ``data``, ``train`` and ``lm``; no part imports ``report``;
* plumbing never imports a part, experiments or cli (``lm`` builds on ``train`` and ``data``);
* experiments import parts, plumbing and report; only ``cli`` sits above them;
* only ``report/plots.py`` imports matplotlib at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kexue"
PARTS = {"attention", "mrc", "vq", "optim", "seq2seq", "analysis", "init", "tagging"}
PLUMBING = {"data", "train", "lm", "report"}
RECIPE_FILES = {"recipe.py", "cli.py"}  # the only files of a part that import data/train/lm
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    **{p: {p, "core"} for p in PARTS},
    "data": {"data", "core"},
    "train": {"train", "core"},
    "lm": {"lm", "train", "data", "core"},
    "report": {"report", "core"},
    "experiments": {"experiments", "core", *PARTS, *PLUMBING},
    "cli": {"core", "experiments", *PARTS, *PLUMBING},
}
ALLOWED["seq2seq"].add("attention")
ALLOWED["mrc"].add("attention")
# attention is a leaf part others build on: the tagger's optional Transformer encoder uses it
ALLOWED["tagging"].add("attention")


def _room(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _kexue_imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("kexue.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("kexue."):
                out.append((node.lineno, node.module))
            elif node.module == "kexue":
                out += [(node.lineno, f"kexue.{a.name}") for a in node.names]
    return out


FILES = sorted(p for p in SRC.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_dependency_direction(path: Path):
    room = _room(path)
    if room == "__init__":
        return
    allowed = ALLOWED.get(room)
    assert allowed is not None, (
        f"{path}: unknown room {room!r}; add it to ARCHITECTURE and this test"
    )
    if room in PARTS and path.name in RECIPE_FILES:
        allowed = allowed | {"data", "train", "lm"}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for lineno, module in _kexue_imports(tree):
        target = module.split(".")[1]
        if target == "__version__":
            continue
        assert target in allowed, (
            f"{path.relative_to(SRC)}:{lineno} imports {module} ({room} may use {sorted(allowed)})"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_matplotlib_only_in_report_plots(path: Path):
    if path.relative_to(SRC).as_posix() == "report/plots.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # anywhere, lazily or not: drawing goes through report.plots
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not any(n.split(".")[0] == "matplotlib" for n in names), (
            f"{path.relative_to(SRC)}:{node.lineno} imports matplotlib (use kexue.report.plots)"
        )


def test_the_test_can_fail(tmp_path):
    bad = ast.parse("from kexue.experiments import REGISTRY\nimport kexue.cli\n")
    assert [m for _, m in _kexue_imports(bad)] == ["kexue.experiments", "kexue.cli"]
