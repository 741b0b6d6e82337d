"""README benchmark tables generated from a committed snapshot of the run that printed them.

A benchmark script run with ``--snapshot PATH`` (``benchmarks/attention.py``,
``benchmarks/optim.py``) writes, beside its printout, a JSON snapshot (:func:`write_snapshot`):
the command, the date, the machine (:func:`machine`), the markdown summary it printed and the raw
measurements. ``make readme`` rewrites the README's block between

    <!-- kexue:bench NAME -->
    ...
    <!-- /kexue:bench -->

with :func:`readme_block` of ``docs/results/bench/NAME.json``, and ``tests/test_readme.py`` fails
if a block differs from its snapshot, so a benchmark number in the README is the one the run
printed, on the machine the block names.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from kexue.core.io import atomic_write_json, atomic_write_text

BLOCK = re.compile(
    r"<!-- kexue:bench (?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- /kexue:bench -->", flags=re.S
)
KEYS = ("name", "command", "date", "machine", "markdown", "data")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What a timing depends on: CPU model and vector ISA as torch sees it, cores, torch threads,
    torch version, the 1-minute load average when called."""
    return {
        "cpu": _cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
    }


def command_line(script: str, argv: list[str]) -> str:
    """``python SCRIPT ARGS`` as the user typed it, less ``--snapshot PATH`` (where the snapshot
    went is not how the numbers were made)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--snapshot":
            skip = True
        elif not a.startswith("--snapshot="):
            out.append(a)
    return " ".join(["python", script, *out])


@contextlib.contextmanager
def tee_stdout() -> Iterator[io.StringIO]:
    """Record what the block prints to stdout while still printing it (for a script whose
    tables print row by row as they are measured); yields the record."""
    record, out = io.StringIO(), sys.stdout

    class _Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            record.write(text)
            return out.write(text)

        def flush(self) -> None:
            out.flush()

    with contextlib.redirect_stdout(_Tee()):
        yield record


def add_snapshot_option(parser: argparse.ArgumentParser, name: str) -> None:
    """Give a benchmark script the ``--snapshot PATH`` option of :func:`run_recorded`."""
    parser.add_argument(
        "--snapshot",
        metavar="PATH",
        default=None,
        help=f"also write what this run prints as JSON (docs/results/bench/{name}.json: the "
        "README block `make readme` renders)",
    )


def run_recorded(
    run: Callable[[], Any],
    snapshot: str | None,
    *,
    name: str,
    script: str,
    argv: Sequence[str] | None = None,
    data: Callable[[], Any] | None = None,
) -> Any:
    """Run a benchmark (``run()``, which prints its tables to stdout); with ``snapshot`` set,
    record what it printed and write it as snapshot ``name`` (:func:`write_snapshot`) once it
    has finished. ``argv`` defaults to ``sys.argv[1:]``; ``data()`` supplies raw measurements."""
    if snapshot is None:
        return run()
    with tee_stdout() as printed:
        out = run()
    argv = sys.argv[1:] if argv is None else list(argv)
    write_snapshot(
        snapshot,
        name=name,
        command=command_line(script, argv),
        markdown=printed.getvalue(),
        data=None if data is None else data(),
    )
    print(f"snapshot: {snapshot}")
    return out


def current_commit() -> str | None:
    """The git commit the working tree is at, with ``+dirty`` when it has uncommitted changes
    (``None`` outside a git checkout): the code a measurement was made with."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def write_snapshot(
    path: str | Path, *, name: str, command: str, markdown: str, data: Any = None
) -> dict[str, Any]:
    """Write (atomically) and return the snapshot of one benchmark run.

    Args:
        path: the JSON file (``docs/results/bench/NAME.json`` for a README block).
        name: the README block's name (lowercase letters, digits, dashes).
        command: how the run was started, as a user would type it.
        markdown: the summary the run printed (tables, targets), rendered verbatim in the README.
        data: the raw measurements (JSON-serialisable; non-finite floats become null).

    Raises:
        ValueError: ``name`` not of the block's form, or empty ``markdown``.
    """
    if not re.fullmatch(r"[a-z0-9-]+", name):
        raise ValueError(f"name must be lowercase letters, digits and dashes, got {name!r}")
    if not markdown.strip():
        raise ValueError("markdown must not be empty")
    snap = {
        "name": name,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": current_commit(),
        "machine": machine(),
        "markdown": markdown.strip("\n"),
        "data": data,
    }
    atomic_write_json(Path(path), snap)
    return snap


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Read a snapshot; ``ValueError`` names the file if it is unreadable or not a snapshot."""
    path = Path(path)
    try:
        snap = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read benchmark snapshot ({exc})") from None
    if not isinstance(snap, dict) or any(k not in snap for k in KEYS):
        raise ValueError(f"{path}: not a benchmark snapshot (needs keys {', '.join(KEYS)})")
    return snap


def readme_block(snap: dict[str, Any]) -> str:
    """The README's markdown for one snapshot: a provenance line, then the run's summary."""
    m = snap["machine"]
    load = "" if m.get("load") is None else f", load {m['load']}"
    head = (
        f"`{snap['command']}` — {snap['date']}; {m['cpu']} ({m['isa']}), {m['cores']} cores, "
        f"{m['threads']} torch threads, torch {m['torch']}{load}"
    )
    return f"{head}\n\n{snap['markdown']}\n"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(name, body)`` of every benchmark block in a README text."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def update_readme(readme: str | Path, snapshots: str | Path) -> list[str]:
    """Rewrite the README's benchmark blocks from ``snapshots/NAME.json``; blocks without a
    snapshot are left alone. Returns the names of the blocks rewritten."""
    readme, snapshots = Path(readme), Path(snapshots)
    text = readme.read_text(encoding="utf-8")
    done: list[str] = []

    def swap(m: re.Match) -> str:
        path = snapshots / f"{m['name']}.json"
        if not path.is_file():
            return m.group(0)
        done.append(m["name"])
        body = readme_block(load_snapshot(path))
        return f"<!-- kexue:bench {m['name']} -->\n{body}<!-- /kexue:bench -->"

    new = BLOCK.sub(swap, text)
    if new != text:
        atomic_write_text(readme, new)
    return done
