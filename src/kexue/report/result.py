"""Typed experiment results: what every experiment's ``run()`` returns and ``results.json`` stores.

An experiment builds a :class:`Result` from numbers its run computed (never typed in)::

    res = Result(headline=f"local attention is {x:.1f}x faster than full at n={n}")
    res.metric("speedup_local", x, "local vs full speed-up (x)")
    res.compare("speed-up at n=16k", article="~10x", ours=f"{x:.1f}x", verdict="holds")
    res.table("Timings", ["n", "full ms", "local ms"], rows)
    res.plot("timing.png", "time vs n")            # the file the run wrote into its out_dir
    res.note("quick preset: 200 steps only")
    return res

The runner fills the provenance (:class:`Provenance`: name, article, part, scale, config,
environment, wall time). Renderers (:mod:`kexue.report.markdown`, :mod:`kexue.report.html`) and
validation (:meth:`Result.validate`) derive from these types; :meth:`Result.to_json` /
:meth:`Result.from_json` round-trip ``results.json`` exactly.

Metric keys are identifiers (Python identifiers such as ``f1_pku_crf``, used by tests and the README checks); their
display labels live apart in ``labels``. Text fields may use inline markdown (``code``,
``**bold**``); the HTML renderer escapes everything and then converts just those two.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Cell = str | int | float | bool | None
MetricValue = int | float | str | bool | None
SCALES = ("smoke", "quick", "full")
VERDICTS = ("", "holds", "does not hold", "within noise", "partly", "not comparable")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_cell(where: str, cell: Any) -> None:
    if cell is not None and not isinstance(cell, str | int | float | bool):
        raise TypeError(f"{where}: cell {cell!r} must be str/int/float/bool/None")


@dataclass
class Comparison:
    """One article-vs-ours row.

    Attributes:
        quantity: what is compared.
        article: the article's (or paper's) figure, as text.
        ours: our figure, as text, computed by this run.
        note: what differs between the setups.
        verdict: one of :data:`VERDICTS` ("" = not a claim, just numbers side by side).
    """

    quantity: str
    article: str
    ours: str
    note: str = ""
    verdict: str = ""

    def __post_init__(self) -> None:
        for f in ("quantity", "article", "ours", "note", "verdict"):
            if not isinstance(getattr(self, f), str):
                raise TypeError(f"Comparison.{f} must be str, got {getattr(self, f)!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"Comparison.verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class Table:
    """A titled table; cells are str/int/float/bool/None (floats are formatted by the renderer)."""

    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""

    def __post_init__(self) -> None:
        self.columns = [str(c) for c in self.columns]
        self.rows = [list(r) for r in self.rows]
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {i} {r} has {len(r)} cells, "
                    f"expected {len(self.columns)}"
                )
            for c in r:
                _check_cell(f"table {self.title!r} row {i}", c)


@dataclass
class Plot:
    """A PNG the run wrote into its run directory, with a caption."""

    file: str
    caption: str = ""

    def __post_init__(self) -> None:
        if not self.file or "/" in self.file or "\\" in self.file or self.file.startswith("."):
            raise ValueError(
                f"Plot.file must be a plain file name in the run dir, got {self.file!r}"
            )


@dataclass
class Provenance:
    """Filled by :func:`kexue.experiments.runner.reproduce`, not by the experiment."""

    name: str
    article: str
    part: str
    summary: str
    scale: str
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")


@dataclass
class Result:
    """An experiment's findings. Build it with the helper methods; the runner adds provenance."""

    headline: str
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    comparison: list[Comparison] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: Provenance | None = None

    # ------------------------------------------------------------------ builders
    def metric(self, key: str, value: MetricValue, label: str = "") -> MetricValue:
        """Record metric ``key`` (an identifier) with a display ``label``; returns ``value``."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"metric key must match an identifier, got {key!r}")
        if key in self.metrics:
            raise ValueError(f"metric {key!r} recorded twice")
        if value is not None and not isinstance(value, int | float | str | bool):
            if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
                value = value.item()
            else:
                raise TypeError(f"metric {key!r}: value {value!r} must be a number or str")
        self.metrics[key] = value
        if label:
            self.labels[key] = label
        return value

    def compare(
        self, quantity: str, *, article: str, ours: str, note: str = "", verdict: str = ""
    ) -> None:
        """Add an article-vs-ours row (see :class:`Comparison`)."""
        self.comparison.append(Comparison(quantity, article, ours, note, verdict))

    def table(
        self, title: str, columns: list[str], rows: list[list[Cell]], caption: str = ""
    ) -> Table:
        """Add and return a :class:`Table`."""
        t = Table(title, list(columns), [list(r) for r in rows], caption)
        self.tables.append(t)
        return t

    def plot(self, file: str | Path, caption: str = "") -> None:
        """Register a PNG written into the run directory (give its name or its path)."""
        self.plots.append(Plot(Path(file).name, caption))

    def note(self, text: str) -> None:
        """Add an honest remark (setup differences, bad numbers, caveats)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a note must be a non-empty str")
        self.notes.append(text)

    # ------------------------------------------------------------------ checks
    def validate(self, run_dir: str | Path | None = None) -> None:
        """Raise ``ValueError`` on a malformed result or (given ``run_dir``) a missing plot file."""
        if not isinstance(self.headline, str) or not self.headline.strip():
            raise ValueError("Result.headline must be a non-empty str")
        for k, v in self.metrics.items():
            if not _KEY.match(k):
                raise ValueError(f"metric key must match an identifier, got {k!r}")
            if v is not None and not isinstance(v, int | float | str | bool):
                raise ValueError(f"metric {k!r} has value {v!r}; expected a number or str")
        for k in self.labels:
            if k not in self.metrics:
                raise ValueError(f"label for unknown metric {k!r}")
        for t in self.tables:
            t.__post_init__()
        for c in self.comparison:
            c.__post_init__()
        if run_dir is not None:
            for p in self.plots:
                if not (Path(run_dir) / p.file).is_file():
                    raise ValueError(f"plot file {p.file!r} was not written to {run_dir}")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``results.json``); provenance fields sit at the top level."""
        out: dict[str, Any] = {}
        if self.provenance is not None:
            out.update(dataclasses.asdict(self.provenance))
        out.update(
            headline=self.headline,
            metrics={k: _json_number(v) for k, v in self.metrics.items()},
            labels=dict(self.labels),
            comparison=[dataclasses.asdict(c) for c in self.comparison],
            tables=[dataclasses.asdict(t) for t in self.tables],
            plots=[dataclasses.asdict(p) for p in self.plots],
            notes=list(self.notes),
        )
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "results.json") -> Result:
        """Inverse of :meth:`to_json`; ``ValueError`` naming ``source`` if the dict is malformed."""
        if not isinstance(obj, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(obj).__name__}")
        for key in ("headline", "metrics", "comparison", "tables", "plots", "notes"):
            if key not in obj:
                raise ValueError(f"{source}: results missing key {key!r}")
        try:
            prov = None
            if "name" in obj:
                names = {f.name for f in dataclasses.fields(Provenance)}
                prov = Provenance(**{k: obj[k] for k in names if k in obj})
            res = cls(
                headline=obj["headline"],
                metrics=dict(obj["metrics"]),
                labels=dict(obj.get("labels", {})),
                comparison=[Comparison(**c) for c in obj["comparison"]],
                tables=[Table(**t) for t in obj["tables"]],
                plots=[Plot(**p) for p in obj["plots"]],
                notes=list(obj["notes"]),
                provenance=prov,
            )
            res.validate()
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{source}: {exc}") from None
        return res

    @property
    def scale(self) -> str | None:
        """The preset scale this result came from (None before the runner fills provenance)."""
        return self.provenance.scale if self.provenance else None


def _json_number(v: MetricValue) -> MetricValue:
    # JSON has no NaN/inf; keep them visible as strings rather than writing invalid JSON
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    var = sum((x - m) ** 2 for x in values) / (len(values) - 1)
    return m, math.sqrt(var)


def pm(values: list[float], digits: int = 2) -> str:
    """``"85.30 ± 0.41 (n=3)"``: mean ± sample std over seeds, as text."""
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f} (n={len(values)})"


def rank_claim(
    a_name: str,
    a: list[float],
    b_name: str,
    b: list[float],
    digits: int = 2,
    lower_is_better: bool = False,
) -> str:
    """A ranking statement that respects seed noise.

    ``"A > B by gap (spread s)"`` only when the mean gap exceeds the larger of the two sample
    stds (and both have >= 3 seeds); otherwise ``"A ≈ B (within noise: ...)"``. Higher is better,
    or with ``lower_is_better`` (losses, bits/char) the better one is named first with ``"<"``.
    """
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    gap = ma - mb
    if min(len(a), len(b)) >= 3 and abs(gap) > max(sa, sb):
        hi, lo = (a_name, b_name) if (gap > 0) != lower_is_better else (b_name, a_name)
        sign = "<" if lower_is_better else ">"
        return f"{hi} {sign} {lo} by {abs(gap):.{digits}f} (spread {max(sa, sb):.{digits}f})"
    return (
        f"{a_name} ≈ {b_name} (within noise: gap {gap:+.{digits}f}, spread {max(sa, sb):.{digits}f}"
        f", n={min(len(a), len(b))})"
    )
