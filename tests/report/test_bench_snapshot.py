"""Benchmark snapshots (kexue.report.bench): write, read back, render, refresh README blocks."""

from __future__ import annotations

import math

import pytest

from kexue.report.bench import (
    blocks,
    command_line,
    load_snapshot,
    readme_block,
    update_readme,
    write_snapshot,
)


def test_snapshot_round_trip_renders_the_printed_summary(tmp_path):
    path = tmp_path / "bench" / "demo.json"
    snap = write_snapshot(
        path, name="demo", command="python benchmarks/demo.py --threads 2",
        markdown="\n| a | b |\n|---|---|\n| 1 | 2 |\n", data={"t": [1.5, math.nan]},
    )  # fmt: skip
    got = load_snapshot(path)
    assert got == {**snap, "data": {"t": [1.5, None]}}  # NaN stored as null
    block = readme_block(got)
    assert block.startswith("`python benchmarks/demo.py --threads 2` — ")
    assert f"{got['machine']['cores']} cores" in block
    assert block.endswith("\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")


def test_update_readme_rewrites_only_blocks_with_a_snapshot(tmp_path):
    write_snapshot(tmp_path / "demo.json", name="demo", command="c", markdown="new numbers")
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- kexue:bench demo -->\nold numbers\n<!-- /kexue:bench -->\n"
        "<!-- kexue:bench other -->\nkept\n<!-- /kexue:bench -->\nend\n",
        encoding="utf-8",
    )
    assert update_readme(readme, tmp_path) == ["demo"]
    text = readme.read_text(encoding="utf-8")
    bodies = dict(blocks(text))
    assert bodies["demo"].endswith("\n\nnew numbers\n") and "old numbers" not in text
    assert bodies["other"] == "kept\n" and text.startswith("intro\n") and text.endswith("end\n")
    assert update_readme(readme, tmp_path) == ["demo"]  # idempotent
    assert readme.read_text(encoding="utf-8") == text


def test_snapshot_errors_name_the_file_or_argument(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: cannot read benchmark snapshot"):
        load_snapshot(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"name": "x"}', encoding="utf-8")
    with pytest.raises(ValueError, match="foreign.json: not a benchmark snapshot"):
        load_snapshot(foreign)
    with pytest.raises(ValueError, match="name must be lowercase"):
        write_snapshot(tmp_path / "x.json", name="Bad Name", command="c", markdown="m")
    with pytest.raises(ValueError, match="markdown must not be empty"):
        write_snapshot(tmp_path / "x.json", name="x", command="c", markdown="\n")


def test_command_line_drops_the_snapshot_path():
    argv = ["--threads", "2", "--snapshot", "docs/x.json", "--sizes", "8", "--snapshot=y.json"]
    assert command_line("benchmarks/a.py", argv) == "python benchmarks/a.py --threads 2 --sizes 8"


def test_tee_stdout_records_and_still_prints(capsys):
    from kexue.report.bench import tee_stdout

    with tee_stdout() as rec:
        print("| a |", flush=True)
        print("row 2")
    assert rec.getvalue() == "| a |\nrow 2\n"
    assert capsys.readouterr().out == "| a |\nrow 2\n"


def test_snapshot_records_the_commit_it_was_measured_at(tmp_path):
    import subprocess
    from pathlib import Path

    snap = write_snapshot(tmp_path / "s.json", name="s", command="c", markdown="x")
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    if head:  # a git checkout (CI's clean clone is one)
        assert snap["commit"].split("+")[0] == head
