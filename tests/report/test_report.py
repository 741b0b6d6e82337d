"""kexue.report: typed results, JSON round trip, markdown and HTML rendering, the index page."""

from __future__ import annotations

import json

import pytest

from kexue.core.io import atomic_write_json
from kexue.report import Comparison, Plot, Provenance, Result, Table, mean_std, pm, rank_claim
from kexue.report.build import build_report, load_results
from kexue.report.html import inline, section_html
from kexue.report.markdown import fmt, render_section
from kexue.report.schema import validate_results

XSS = "<img src=x onerror=alert(1)>"


def _result(name: str = "demo", scale: str = "quick") -> Result:
    res = Result(headline="it works: 0.5 < 1 with `code` and **bold**")
    res.metric("x", 0.5, "the x value")
    res.metric("n_items", 3)
    res.compare("x", article="0.6", ours="0.5", note="n", verdict="holds")
    res.table("T", ["a", "b"], [[1, 0.123456], ["p|q", None]])
    res.plot("line.png", "a line")
    res.note("honest note")
    res.provenance = Provenance(
        name=name, article="an article", part="kexue.demo", summary="one line", scale=scale,
        config={"steps": 1}, environment={"torch": "x"}, wall_time_s=1.5,
    )  # fmt: skip
    return res


def _write(tmp_path, name="demo", scale="quick") -> tuple:
    from kexue.report.plots import figure, save

    run = tmp_path / name
    run.mkdir()
    fig, ax = figure()
    ax[0, 0].plot([0, 1], [1, 0])
    save(fig, run / "line.png")
    res = _result(name, scale)
    atomic_write_json(run / "results.json", res.to_json())
    return run, res


def test_json_round_trip_is_exact():
    res = _result()
    obj = json.loads(json.dumps(res.to_json()))
    back = Result.from_json(obj)
    assert back == res and back.to_json() == res.to_json()
    assert obj["metrics"] == {"x": 0.5, "n_items": 3} and obj["labels"] == {"x": "the x value"}


def test_builders_refuse_malformed_content():
    res = Result(headline="h")
    with pytest.raises(ValueError, match="identifier"):
        res.metric("norm/ratio", 1.0)
    res.metric("a", 1.0)
    with pytest.raises(ValueError, match="twice"):
        res.metric("a", 2.0)
    with pytest.raises(TypeError, match="number"):
        res.metric("b", [1, 2])
    with pytest.raises(ValueError, match="2 cells, expected 1"):
        Table("T", ["a"], [[1, 2]])
    with pytest.raises(TypeError, match="cell"):
        Table("T", ["a"], [[{"x": 1}]])
    with pytest.raises(ValueError, match="verdict"):
        Comparison("q", "a", "o", verdict="sort of")
    with pytest.raises(ValueError, match="plain file name"):
        Plot("../escape.png")
    with pytest.raises(ValueError, match="scale"):
        Provenance("n", "a", "p", "s", scale="huge")
    with pytest.raises(ValueError, match="non-empty"):
        res.note("  ")


def test_validate_results_catches_defects(tmp_path):
    run, res = _write(tmp_path)
    validate_results(res.to_json(), run)
    obj = res.to_json()
    with pytest.raises(ValueError, match="2 cells, expected 1"):
        validate_results(dict(obj, tables=[{"title": "T", "columns": ["a"], "rows": [[1, 2]]}]))
    with pytest.raises(ValueError, match="missing key 'headline'"):
        validate_results({k: v for k, v in obj.items() if k != "headline"})
    with pytest.raises(ValueError, match="was not written"):
        validate_results(dict(obj, plots=[{"file": "nope.png", "caption": ""}]), run)
    with pytest.raises(ValueError, match="unknown metric"):
        validate_results(dict(obj, labels={"zzz": "no such metric"}))


def test_load_results_names_a_corrupt_or_foreign_file(tmp_path):
    run, _ = _write(tmp_path)
    (run / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json: not a valid results.json"):
        load_results(run)
    (run / "results.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="results missing key"):
        load_results(run)


def test_markdown_section_contains_everything():
    md = render_section(_result(), image_prefix="demo/")
    assert "## demo" in md and "**it works: 0.5 < 1" in md
    assert "| x | 0.6 | 0.5 | holds | n |" in md
    assert "| 1 | 0.1235 |" in md and "p\\|q" in md and "—" in md
    assert "![a line](demo/line.png)" in md and "- honest note" in md
    assert "| x | the x value | 0.5 |" in md
    assert fmt(1e-7) == "1.000e-07" and fmt(3) == "3" and fmt(True) == "yes"


def test_html_escapes_then_renders_inline_markdown():
    assert inline(XSS) == "&lt;img src=x onerror=alert(1)&gt;"
    assert inline("a `b<c>` **d**") == "a <code>b&lt;c&gt;</code> <b>d</b>"
    res = _result()
    res.note(XSS)
    res.table("T2", [XSS], [[XSS]])
    page = section_html(res)
    assert "<img src=x" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") == 3
    assert "<code>code</code>" in page and "<b>bold</b>" in page
    assert "`" not in page and "\\|" not in page  # no raw markdown shows through
    assert "p|q" in page


def test_smoke_scale_is_labelled_a_plumbing_check():
    md = render_section(_result(scale="smoke"))
    assert "plumbing check" in md and "plumbing check" in section_html(_result(scale="smoke"))
    assert "plumbing check" not in render_section(_result(scale="quick"))


def test_build_report_index_and_failures_escaped(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    index = build_report(tmp_path, failures={"c": f"ValueError: unknown config key {XSS!r}"})
    html = index.read_text()
    assert html.count("<h2 id=") == 2 and 'src="a/line.png"' in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt; 1" in html
    md = (tmp_path / "README.md").read_text()
    assert "## a" in md and "## b" in md and "Failed experiments" in md
    assert (tmp_path / "a" / "index.html").is_file()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["name"] == "a"


def test_seed_statistics_and_claims():
    assert mean_std([1.0]) == (1.0, 0.0)
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    assert pm([1.0, 2.0, 3.0]) == "2.00 ± 1.00 (n=3)"
    assert rank_claim("A", [10, 10.1, 9.9], "B", [5, 5.1, 4.9]).startswith("A > B")
    assert "within noise" in rank_claim("A", [10, 12, 8], "B", [9, 11, 10])
    assert "within noise" in rank_claim("A", [10, 10.1], "B", [5, 5.1])  # fewer than 3 seeds
    # lower is better (bits/char): the smaller mean is named first, with "<"
    assert rank_claim("A", [10, 10.1, 9.9], "B", [5, 5.1, 4.9], lower_is_better=True) == (
        "B < A by 5.00 (spread 0.10)"
    )
    assert rank_claim("A", [5, 5.1, 4.9], "B", [10, 10.1, 9.9], lower_is_better=True).startswith(
        "A < B"
    )
    with pytest.raises(ValueError):
        mean_std([])
