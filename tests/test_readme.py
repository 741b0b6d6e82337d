"""README.md and the docs pages tell the truth: snippets run, their stated outputs are printed,
and every results, benchmark and summary block equals what its committed snapshots render to
(house rule 15)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kexue.report.bench import blocks as bench_blocks
from kexue.report.bench import load_snapshot as load_bench_snapshot
from kexue.report.bench import readme_block as bench_readme_block
from kexue.report.readme import (
    SUMMARY,
    blocks,
    doc_pages,
    load_snapshot,
    readme_block,
    summary_block,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
PAGES = [README, *doc_pages(ROOT / "docs")]
ALL = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in PAGES}
SNIPPETS = [(name, code) for name, text in ALL.items()
            for code in re.findall(r"```python\n(.*?)```", text, flags=re.S)]  # fmt: skip
# `print(...)  # -> 0.0101 (remark)`: the snippet must print the text after "-> " (a trailing
# parenthesised remark is not part of it)
EXPECT = re.compile(r"#\s*->\s*(.+?)(?:\s+\(.*\))?\s*$", flags=re.M)


def test_readme_has_snippets_and_commands_and_stays_short():
    assert "make report" in TEXT and "make test" in TEXT
    assert sum(name == "README.md" for name, _ in SNIPPETS) >= 8  # a quickstart per part
    assert len(TEXT.splitlines()) <= 250, "the README is the front page: move detail into docs/"


def test_readme_summary_table_matches_the_snapshots():
    m = SUMMARY.search(TEXT)
    assert m, "README lacks the <!-- kexue:summary --> block"
    from kexue.experiments import REGISTRY

    body = summary_block(ROOT / "docs" / "results", REGISTRY.values())
    assert m["body"] == body, "run `make readme`"


@pytest.mark.parametrize(
    "page, code", SNIPPETS, ids=[f"{n.replace('/', '-')}-{i}" for i, (n, _) in enumerate(SNIPPETS)]
)
def test_snippet_runs_and_prints_what_it_says(page, code, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, f"{page} snippet failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    for expected in EXPECT.findall(code):
        assert expected in r.stdout, f"{page} says {expected!r}, the snippet printed:\n{r.stdout}"


def test_expected_output_check_can_fail():
    assert EXPECT.findall("print(1)  # -> 2\nx = 3  # -> a b (why)") == ["2", "a b"]


BLOCKS = [(page, *b) for page, text in ALL.items() for b in blocks(text)]


def test_every_registered_experiment_has_a_results_block():
    from kexue.experiments import REGISTRY

    named = {name for _, name, _, _ in BLOCKS}
    assert set(REGISTRY) <= named, f"the docs lack results blocks for {set(REGISTRY) - named}"


@pytest.mark.parametrize(
    "page, name, scale, body", BLOCKS, ids=[f"{p}-{n}-{s}" for p, n, s, _ in BLOCKS]
)
def test_results_block_matches_its_run_snapshot(page, name, scale, body):
    snap = ROOT / "docs" / "results" / scale / f"{name}.json"
    assert snap.is_file(), f"{snap} missing: run `make report && make readme`"
    res = load_snapshot(snap)
    assert res.provenance.name == name and res.provenance.scale == scale
    assert body == readme_block(res), (
        f"{page} block {name}/{scale} differs from {snap.relative_to(ROOT)}: run `make readme`"
    )


BENCH_BLOCKS = [(page, *b) for page, text in ALL.items() for b in bench_blocks(text)]


def test_the_docs_have_the_generated_benchmark_blocks():
    names = {"attention", "attention-decode", "optim", "tagging", "train", "vq", "seq2seq", "mrc"}
    names |= {"analysis", "init", "lm", "lm-recipes", "zh-char-bert"}
    assert names <= {name for _, name, _ in BENCH_BLOCKS}


@pytest.mark.parametrize(
    "page, name, body", BENCH_BLOCKS, ids=[f"{p}-{n}" for p, n, _ in BENCH_BLOCKS]
)
def test_benchmark_block_matches_its_run_snapshot(page, name, body):
    """A benchmark table in the README is what `benchmarks/*.py --snapshot` printed."""
    snap = ROOT / "docs" / "results" / "bench" / f"{name}.json"
    assert snap.is_file(), f"{snap} missing: run the benchmark with --snapshot, then `make readme`"
    got = load_bench_snapshot(snap)
    assert got["name"] == name
    assert body == bench_readme_block(got), (
        f"{page} benchmark block {name} differs from {snap.relative_to(ROOT)}: run `make readme`"
    )
