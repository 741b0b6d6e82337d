"""The real console script, end to end (subprocess), including bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KEXUE = shutil.which("kexue", path=str(Path(sys.executable).parent)) or shutil.which("kexue")


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    assert KEXUE, "the kexue console script is not installed"
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([KEXUE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "reproduce" in r.stdout and "report" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("kexue ")


def test_list_names_every_registered_experiment():
    from kexue.experiments import REGISTRY

    r = run("list")
    assert r.returncode == 0
    for name in REGISTRY:
        assert name in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (("reproduce", "no-such-experiment"), "unknown experiment 'no-such-experiment'"),
        (("reproduce", "init-geometry", "--scale", "huge"), "invalid choice: 'huge'"),
        (("reproduce", "init-geometry", "notakeyvalue"), "must look like key=value"),
        (("reproduce", "init-geometry", "no_such_key=1"), "unknown config key 'no_such_key'"),
        (("bogus-command",), "invalid choice"),
        (("report", "--only", "nope"), "unknown experiment 'nope'"),
        (("reproduce", "sparse-attention", "bench_sizes=0"), "bench_sizes must be"),
        (("reproduce", "init-geometry", "depth=-3"), "depth must be an int >= 1"),
        (("reproduce", "init-geometry", "widths=0"), "widths must be"),
        (("reproduce", "init-geometry", "depth=abc"), "expected int"),
        (("reproduce", "optimizers", "alpha=2"), "alpha must be in (0, 1]"),
        (("readme", "--results", "/no/such/dir"), "--results /no/such/dir does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    r = (
        run(args[0], "--out", str(tmp_path), *args[1:])
        if args[0] in ("reproduce", "report")
        else run(*args)
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_data_list():
    r = run("data", "list")
    assert r.returncode == 0, r.stderr
    assert "mnist" in r.stdout and "ud-gsd-cws" in r.stdout


def test_reproduce_init_geometry_smoke_writes_files(tmp_path):
    out = tmp_path / "ig"
    r = run("reproduce", "init-geometry", "--scale", "smoke", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["name"] == "init-geometry" and res["scale"] == "smoke"
    assert "plumbing check" in (out / "section.md").read_text()
    assert json.loads((out / "config.json").read_text()) == res["config"]
    assert res["comparison"] and res["plots"] and res["headline"]
    for plot in res["plots"]:
        png = out / plot["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## init-geometry" in (out / "section.md").read_text()
    assert res["environment"]["torch"] and res["wall_time_s"] > 0


def test_overrides_may_follow_the_options(tmp_path):
    # the README's order: NAME --scale --out DIR key=value (argparse alone rejects it)
    out = tmp_path / "ig"
    r = run("reproduce", "init-geometry", "--scale", "smoke", "--out", str(out), "--no-progress",
            "depth=4", "nets=2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["depth"] == 4 and cfg["nets"] == 2


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = run("reproduce", "init-geometry", "--out", str(f))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "exists and is not a directory" in r.stderr and "Traceback" not in r.stderr


def test_report_failure_message_with_markup_is_escaped(tmp_path):
    # unknown keys are refused before any run now, so the failure comes from a bad value
    payload = "<img src=x onerror=alert(1)>"
    r = run("report", "--only", "init-geometry", "--scale", "smoke", "--out", str(tmp_path),
            "--no-progress", f"nets={payload}")  # fmt: skip
    assert r.returncode == 1  # the experiment failed (bad value) and the report says so
    page = (tmp_path / "index.html").read_text()
    assert "expected int" in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the value, escaped


def test_an_earlier_run_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "ig"
    args = ("reproduce", "init-geometry", "--out", str(out), "--no-progress", "depth=3", "nets=1")
    assert run(*args).returncode == 0
    stamp = (out / "results.json").read_text()
    r = run(*args)
    assert r.returncode == 2 and "holds an earlier run" in r.stderr and "--overwrite" in r.stderr
    assert (out / "results.json").read_text() == stamp  # untouched
    # init-geometry has no resume support: --resume says so in one line instead of rerunning
    r = run(*args, "--resume")
    assert r.returncode == 2 and "cannot resume" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run(*args, "--resume", "--overwrite")
    assert r.returncode == 2 and "not both" in r.stderr
    (out / "stale.txt").write_text("from the earlier run")
    r = run(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not (out / "stale.txt").exists()  # the earlier run directory was replaced whole


def test_reproduce_without_out_uses_runs_name_and_tuple_hint(tmp_path, monkeypatch, capsys):
    from kexue.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "init-geometry", "--scale", "smoke", "--no-progress"]) == 0
    assert (tmp_path / "runs" / "init-geometry" / "results.json").is_file()
    assert not (tmp_path / "runs" / "results.json").exists()
    capsys.readouterr()
    assert main(["reproduce", "init-geometry", "--scale", "smoke", "--out", "x",
                 "widths=(16,32)"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "widths=16,32" in err and "\n" not in err.strip()


def test_report_checks_every_override_before_running_any(tmp_path, capsys):
    from kexue.cli import main

    argv = ["report", "--scale", "smoke", "--out", str(tmp_path / "r"), "--only",
            "init-geometry", "optimizers", "widths=16,32"]  # fmt: skip
    assert main(argv) == 2
    assert "optimizers" in capsys.readouterr().err
    assert not (tmp_path / "r" / "init-geometry").exists()  # nothing ran first
