"""Validation of ``results.json``: derived from the types in :mod:`kexue.report.result`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexue.report.result import Result


def validate_results(results: dict[str, Any] | Result, out_dir: str | Path | None = None) -> Result:
    """Parse and check a results dict (or :class:`Result`); ``ValueError`` names what is wrong.

    Given ``out_dir``, also checks that every plot file was written there. Returns the Result.
    """
    res = results if isinstance(results, Result) else Result.from_json(results)
    res.validate(out_dir)
    return res
