"""README.md tells the truth: snippets run, their stated outputs are printed, and every results
block equals what its committed run snapshot renders to (house rule 15)."""

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
from kexue.report.readme import blocks, load_snapshot, readme_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
# `print(...)  # -> 0.0101 (remark)`: the snippet must print the text after "-> " (a trailing
# parenthesised remark is not part of it)
EXPECT = re.compile(r"#\s*->\s*(.+?)(?:\s+\(.*\))?\s*$", flags=re.M)


def test_readme_has_snippets_and_commands():
    assert "make report" in TEXT and "make test" in TEXT
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs_and_prints_what_it_says(code, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    for expected in EXPECT.findall(code):
        assert expected in r.stdout, f"README says {expected!r}, the snippet printed:\n{r.stdout}"


def test_expected_output_check_can_fail():
    assert EXPECT.findall("print(1)  # -> 2\nx = 3  # -> a b (why)") == ["2", "a b"]


BLOCKS = blocks(TEXT)


def test_every_registered_experiment_has_a_results_block():
    from kexue.experiments import REGISTRY

    named = {name for name, _, _ in BLOCKS}
    assert set(REGISTRY) <= named, f"README lacks results blocks for {set(REGISTRY) - named}"


@pytest.mark.parametrize("name, scale, body", BLOCKS, ids=[f"{n}-{s}" for n, s, _ in BLOCKS])
def test_results_block_matches_its_run_snapshot(name, scale, body):
    snap = ROOT / "docs" / "results" / scale / f"{name}.json"
    assert snap.is_file(), f"{snap} missing: run `make report && make readme`"
    res = load_snapshot(snap)
    assert res.provenance.name == name and res.provenance.scale == scale
    assert body == readme_block(res), (
        f"README block {name}/{scale} differs from {snap.relative_to(ROOT)}: run `make readme`"
    )


BENCH_BLOCKS = bench_blocks(TEXT)


def test_readme_has_the_generated_benchmark_blocks():
    names = {"attention", "attention-decode", "optim", "tagging", "train", "vq", "seq2seq", "mrc"}
    names |= {"analysis", "init", "lm", "lm-recipes", "zh-char-bert"}
    assert names <= {name for name, _ in BENCH_BLOCKS}


@pytest.mark.parametrize("name, body", BENCH_BLOCKS, ids=[n for n, _ in BENCH_BLOCKS])
def test_benchmark_block_matches_its_run_snapshot(name, body):
    """A benchmark table in the README is what `benchmarks/*.py --snapshot` printed."""
    snap = ROOT / "docs" / "results" / "bench" / f"{name}.json"
    assert snap.is_file(), f"{snap} missing: run the benchmark with --snapshot, then `make readme`"
    got = load_bench_snapshot(snap)
    assert got["name"] == name
    assert body == bench_readme_block(got), (
        f"README benchmark block {name} differs from {snap.relative_to(ROOT)}: run `make readme`"
    )
