import json

import pytest

from kexue.core.io import atomic_write_json
from kexue.report.build import build_report
from kexue.report.markdown import fmt, render_section
from kexue.report.schema import validate_results


def _results(tmp_path, name="demo"):
    from kexue.report.plots import figure, save

    run = tmp_path / name
    run.mkdir()
    fig, ax = figure()
    ax[0, 0].plot([0, 1], [1, 0])
    save(fig, run / "line.png")
    res = {
        "name": name,
        "article": "an article",
        "part": "kexue.demo",
        "summary": "one line",
        "scale": "smoke",
        "config": {"steps": 1},
        "headline": "it works: 0.5 < 1",
        "metrics": {"x": 0.5},
        "comparison": [{"quantity": "x", "article": "0.6", "ours": "0.5", "note": "n"}],
        "tables": [{"title": "T", "columns": ["a", "b"], "rows": [[1, 0.123456], ["p|q", None]]}],
        "plots": [{"file": "line.png", "caption": "a line"}],
        "notes": ["honest note"],
        "environment": {"torch": "x"},
        "wall_time_s": 1.5,
    }
    atomic_write_json(run / "results.json", res)
    return run, res


def test_validate_results_catches_defects(tmp_path):
    run, res = _results(tmp_path)
    validate_results(res, run)
    bad = dict(res, tables=[{"title": "T", "columns": ["a"], "rows": [[1, 2]]}])
    with pytest.raises(ValueError, match="2 cells, expected 1"):
        validate_results(bad)
    with pytest.raises(ValueError, match="missing key 'headline'"):
        validate_results({k: v for k, v in res.items() if k != "headline"})
    with pytest.raises(ValueError, match="was not written"):
        validate_results(dict(res, plots=[{"file": "nope.png"}]), run)


def test_markdown_section_contains_everything(tmp_path):
    _, res = _results(tmp_path)
    md = render_section(res, image_prefix="demo/")
    assert "## demo" in md and "**it works: 0.5 < 1**" in md
    assert "| x | 0.6 | 0.5 | n |" in md
    assert "| 1 | 0.1235 |" in md and "p\\|q" in md and "—" in md
    assert "![a line](demo/line.png)" in md and "- honest note" in md
    assert fmt(1e-7) == "1.000e-07" and fmt(3) == "3" and fmt(True) == "yes"


def test_build_report_index_and_failures(tmp_path):
    _results(tmp_path, "a")
    _results(tmp_path, "b")
    index = build_report(tmp_path, failures={"c": "ValueError: boom"})
    html = index.read_text()
    assert html.count("<h2 id=") == 2 and 'src="a/line.png"' in html and "boom" in html
    assert "&lt; 1" in html  # escaped
    md = (tmp_path / "README.md").read_text()
    assert "## a" in md and "## b" in md and "Failed experiments" in md
    assert (tmp_path / "a" / "index.html").is_file()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["name"] == "a"
