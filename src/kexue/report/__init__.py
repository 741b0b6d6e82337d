"""Reports: typed experiment results -> ``results.json``, markdown sections, static HTML pages.

``from kexue.report import Result`` is what every experiment's ``run()`` returns. Plot helpers
live in :mod:`kexue.report.plots`, the only module of the package that imports matplotlib.
"""

from kexue.report.result import (
    Comparison,
    Plot,
    Provenance,
    Result,
    Table,
    mean_std,
    pm,
    rank_claim,
)

__all__ = [
    "Comparison",
    "Plot",
    "Provenance",
    "Result",
    "Table",
    "mean_std",
    "pm",
    "rank_claim",
]
