"""The ``kexue`` command line.

``kexue list`` · ``kexue reproduce NAME|all --scale smoke|quick|full --out DIR [key=value ...]`` ·
``kexue report --scale quick --out report/`` · ``kexue data list`` ·
``kexue tag train|evaluate|predict`` · ``kexue lm|mrc|vq|seq2seq ...`` (each part's ``cli.py``).

User errors (bad arguments, unknown names, malformed files) print one line on stderr and exit
with code 2; no traceback unless ``KEXUE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import kexue

# parts (and plumbing) with a command group, in `kexue --help` order; each module defines
# ``add_subparser(subparsers)``
PART_CLIS = ("tagging", "lm", "mrc", "vq", "seq2seq", "analysis")


class UsageError(ValueError):
    """A command-line mistake: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (argparse prints usage + error by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _cmd_list(args: argparse.Namespace) -> int:
    from kexue.experiments import REGISTRY

    width = max(len(n) for n in REGISTRY)
    for entry in REGISTRY.values():
        print(f"{entry.name:<{width}}  {entry.part:<16} {entry.article}")
        print(f"{'':<{width}}  {'':<16} {entry.summary}")
        if entry.full_time:
            print(f"{'':<{width}}  {'':<16} --scale full: {entry.full_time}")
    return 0


def _names(name: str) -> list[str]:
    from kexue.experiments import REGISTRY, get

    if name == "all":
        return list(REGISTRY)
    get(name)  # raises ValueError listing the known names
    return [name]


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from kexue.experiments.runner import parse_overrides, reproduce

    names = _names(args.name)
    overrides = parse_overrides(args.overrides)
    out = Path(args.out)
    default_out = args.out == "runs"  # no --out: runs/NAME, so two experiments never collide
    for name in names:
        run_dir = out / name if len(names) > 1 or default_out else out
        res = reproduce(
            name, args.scale, run_dir, overrides, not args.no_progress, args.overwrite, args.resume
        )
        print(f"{name}: {res.headline}")
        print(f"  -> {run_dir}/results.json ({res.provenance.wall_time_s:.1f} s)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kexue.experiments.runner import parse_overrides, reproduce
    from kexue.report.build import build_report

    names = args.only or _names("all")
    for n in names:
        _names(n)
    overrides = parse_overrides(args.overrides)
    if overrides:  # every key must exist in every experiment: checked before any runs
        import dataclasses

        from kexue.experiments import get

        for n in names:
            fields = {f.name for f in dataclasses.fields(get(n).load().PRESETS[args.scale])}
            unknown = sorted(set(overrides) - fields)
            if unknown:
                raise ValueError(
                    f"{n} has no config key {', '.join(map(repr, unknown))} (it would fail "
                    "after the others ran); give the override to `kexue reproduce` instead"
                )
    out = Path(args.out)
    failures: dict[str, str] = {}
    for name in names:
        print(f"== {name} ({args.scale})", flush=True)
        try:
            res = reproduce(
                name, args.scale, out / name, overrides, not args.no_progress, args.overwrite,
                args.resume,
            )  # fmt: skip
            print(f"   {res.headline} [{res.provenance.wall_time_s:.0f} s]", flush=True)
        except Exception as exc:  # one failing experiment must not hide the others
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"   FAILED: {failures[name]}", file=sys.stderr, flush=True)
            if os.environ.get("KEXUE_DEBUG"):
                traceback.print_exc()
    index = build_report(out, failures)
    print(f"report: {index} and {out / 'README.md'}")
    return 1 if failures else 0


def _cmd_readme(args: argparse.Namespace) -> int:
    from kexue.experiments import REGISTRY
    from kexue.report.bench import update_readme as update_bench_blocks
    from kexue.report.readme import doc_pages, update_readme, update_summary

    for path, what in ((args.readme, "--readme"), (args.results, "--results")):
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} {path} does not exist")
    pages = [Path(args.readme)] + (doc_pages(args.docs) if Path(args.docs).is_dir() else [])
    bench = Path(args.snapshots) / "bench"
    for page in pages:
        names = update_readme(page, args.results, args.snapshots)
        print(f"{page}: results blocks {', '.join(names) or 'none'}")
        names = update_bench_blocks(page, bench)
        print(f"{page}: benchmark blocks {', '.join(names) or 'none'}")
        if update_summary(page, args.snapshots, REGISTRY.values()):
            print(f"{page}: summary table")
    return 0


def _cmd_data_list(args: argparse.Namespace) -> int:
    from kexue.data import list_datasets

    rows = list_datasets()
    print(f"{'name':<18} {'task':<34} {'size':>9}  {'licence':<28} splits / location")
    for r in rows:
        splits = ", ".join(f"{k} {v}" if v is not None else k for k, v in dict(r["splits"]).items())
        size = f"{r['size_bytes'] / 2**20:.1f} MB"
        print(
            f"{r['name']:<18} {str(r['task'])[:34]:<34} {size:>9}  {str(r['licence'])[:28]:<28} {splits}"
        )
        print(f"{'':<18} {'':<34} {'':>9}  {'':<28} {r['location']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    p = _Parser(
        prog="kexue",
        description="Eight Scientific Spaces (kexue.fm) articles as tested PyTorch software, "
        "each with an experiment that reproduces its claim.",
    )
    p.add_argument("--version", action="version", version=f"kexue {kexue.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("list", help="registered experiments and their articles")
    s.set_defaults(func=_cmd_list)

    p.intermixed = {}  # type: ignore[attr-defined]
    for cmd, helptext in (
        ("reproduce", "run one experiment (or all)"),
        ("report", "run experiments and build the report"),
    ):
        s = sub.add_parser(cmd, help=helptext)
        p.intermixed[cmd] = s  # type: ignore[attr-defined]
        if cmd == "reproduce":
            s.add_argument("name", help="experiment name (see `kexue list`) or 'all'")
            s.set_defaults(func=_cmd_reproduce, out="runs")
        else:
            s.add_argument("--only", nargs="+", metavar="NAME", help="only these experiments")
            s.set_defaults(func=_cmd_report, out="report")
        s.add_argument(
            "--scale",
            choices=("smoke", "quick", "full"),
            default="quick" if cmd == "report" else "smoke",
        )
        s.add_argument("--out", help="output directory (default: runs/ or report/)")
        s.add_argument("--no-progress", action="store_true", help="no progress bars")
        s.add_argument(
            "--overwrite",
            action="store_true",
            help="replace an earlier run in the output directory",
        )
        s.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run in the output directory (same scale and overrides; "
            "experiments that cannot resume say so)",
        )
        s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    s = sub.add_parser(
        "readme",
        help="refresh the README's results blocks from a report directory (and its benchmark "
        "blocks from SNAPSHOTS/bench)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--results", default="report", help="report directory (kexue report --out)")
    s.add_argument("--readme", default="README.md", help="README to update in place")
    s.add_argument("--docs", default="docs", help="docs site whose Markdown pages are updated too")
    s.add_argument("--snapshots", default="docs/results", help="where result snapshots go")
    s.set_defaults(func=_cmd_readme)

    s = sub.add_parser("data", help="shipped datasets")
    dsub = s.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser)
    d = dsub.add_parser("list", help="datasets, sizes, licences, locations")
    d.set_defaults(func=_cmd_data_list)

    for part in PART_CLIS:  # each part's `<part>/cli.py` adds `kexue <part> ...`
        name = f"kexue.{part}.cli"
        if importlib.util.find_spec(f"kexue.{part}") and importlib.util.find_spec(name):
            importlib.import_module(name).add_subparser(sub)
    return p


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    # `reproduce NAME --scale smoke --out DIR key=value`: overrides may come after options,
    # which plain parse_args rejects ("unrecognized arguments"); intermixed parsing accepts them
    # (argparse refuses intermixed parsing on a parser with subcommands, so the subcommand's own
    # parser does it)
    intermixed = getattr(parser, "intermixed", {})
    if argv and argv[0] in intermixed:
        ns = intermixed[argv[0]].parse_intermixed_args(argv[1:])
        ns.command = argv[0]
        return ns
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kexue`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 2 if not argv else 0
        return int(func(args) or 0)
    except (UsageError, ValueError, TypeError, FileNotFoundError) as exc:
        if os.environ.get("KEXUE_DEBUG"):
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not msg.startswith("kexue"):
            msg = f"kexue: error: {msg}"
        print(msg, file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kexue list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("kexue: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line, but exit 1
        if os.environ.get("KEXUE_DEBUG"):
            raise
        print(
            f"kexue: internal error: {type(exc).__name__}: {exc} (KEXUE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
