"""The docs site: it builds with warnings as errors, its internal links and anchors resolve, the
API and CLI references cover every public name and command, the tutorials run as written, and a
real headless browser finds the expected headings.

The browser check needs Debian's chromium (``.ci/run`` installs it) and the ``playwright`` package
(the ``docs`` extra); ``KEXUE_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import html.parser
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("attention", "lm", "mrc", "vq", "optim", "seq2seq", "analysis", "init", "tagging",
            "data", "train", "report", "core")  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    r = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, f"docs build failed (warnings are errors):\n{r.stderr[-4000:]}"
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.headings: list[str] = []
        self._in_h = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if tag in ("a", "img", "script", "link") and a.get(key):
                self.links.append(a[key])
        self._in_h = tag in ("h1", "h2", "h3")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3"):
            self._in_h = False

    def handle_data(self, data):
        if self._in_h and data.strip():
            self.headings.append(data.strip())


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def broken_links(site: Path) -> list[str]:
    """Every internal link of the built site whose file or ``#anchor`` does not exist."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    bad = []
    for page, parsed in pages.items():
        for link in parsed.links:
            url = urlparse(link)
            if url.scheme or url.netloc or link.startswith("mailto:"):
                continue  # external: not checked (no network), and none is needed offline
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                bad.append(f"{page.relative_to(site)} -> {link} (no such file)")
                continue
            if url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(url.fragment) not in ids:
                    bad.append(f"{page.relative_to(site)} -> {link} (no such anchor)")
    return bad


def test_no_broken_internal_link_or_anchor(site):
    assert list(site.rglob("*.html")), "nothing built"
    assert broken_links(site) == []


def test_the_link_checker_can_fail(site, tmp_path):
    copy = tmp_path / "html"
    shutil.copytree(site, copy)
    page = copy / "index.html"
    page.write_text(
        page.read_text(encoding="utf-8").replace("</body>", '<a href="nowhere.html">x</a>'
                                                  '<a href="api.html#no-such-id">y</a></body>'),
        encoding="utf-8",
    )  # fmt: skip
    bad = broken_links(copy)
    assert any("nowhere.html" in b for b in bad) and any("no-such-id" in b for b in bad)


def test_every_part_page_has_the_sections_a_reader_looks_for(site):
    for part in ("attention", "mrc", "vq", "optim", "seq2seq", "analysis", "init", "tagging"):
        heads = _parse(site / "parts" / f"{part}.html").headings
        for want in ("What the article says", "Use it from Python", "Command line", "Benchmark",
                     "Results", "Pitfalls"):  # fmt: skip
            assert want in heads, (part, want, heads)


def test_api_reference_documents_every_public_name(site):
    ids = _parse(site / "api.html").ids
    missing = []
    for pkg in PACKAGES:
        mod = importlib.import_module(f"kexue.{pkg}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not callable(obj):
                continue  # constants: listed in the module docstring
            home = getattr(obj, "__module__", None) or ""
            if not any(i.endswith(f".{name}") and i.startswith("kexue.") for i in ids):
                missing.append(f"kexue.{pkg}.{name} ({home})")
    assert missing == []


def test_cli_reference_is_the_parser(site):
    from kexue.cli import build_parser

    text = (site / "cli.html").read_text(encoding="utf-8")
    for line in build_parser().format_help().splitlines():
        if line.strip().startswith(("reproduce", "report", "tag", "seq2seq", "lm", "mrc", "vq")):
            assert line.split()[0] in text
    for cmd in ("kexue seq2seq train", "kexue mrc train", "kexue tag predict", "kexue lm export"):
        assert re.search(re.escape(cmd), text), cmd
    assert "--require-answer" in text and "--max-minutes" in text


def _blocks(md: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", md.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("tutorial", ["vq-image-folder", "seq2seq-tsv"])
def test_tutorial_runs_as_written(tutorial, tmp_path):
    md = DOCS / "tutorials" / f"{tutorial}.md"
    env = dict(os.environ, MPLBACKEND="Agg",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
    for code in _blocks(md, "python"):
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    for code in _blocks(md, "bash"):
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
        assert r.returncode == 0, f"{tutorial}:\n{code}\n{r.stderr[-3000:]}"


def _chromium() -> str:
    path = os.environ.get("KEXUE_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "no chromium for the browser check: `apt-get install chromium` (.ci/run does) "
            "or set KEXUE_CHROMIUM"
        )
    return path


def test_pages_render_in_a_headless_browser(site):
    from playwright import sync_api  # the docs extra

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((site / "index.html").as_uri())
            heads = [h.inner_text() for h in page.query_selector_all("h1, h2")]
            assert "kexue" in heads[0] and "The eight parts" in heads
            page.click("text=Bidirectional decoding")  # a real navigation through the site
            page.wait_for_load_state()
            assert page.url.endswith("parts/seq2seq.html")
            heads = [h.inner_text() for h in page.query_selector_all("h2")]
            assert any("Pitfalls" in h for h in heads) and any("Results" in h for h in heads)
            assert page.query_selector("table") is not None  # the generated results table
            assert errors == []
        finally:
            browser.close()


def _kexue_commands(text: str) -> list[str]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("|"):
                part = part.strip()
                if part.startswith("kexue "):
                    out.append(part)
    return out


def test_every_kexue_command_in_the_docs_parses():
    """Commands too long to run in the tests (full trainings) must at least be valid: each one
    in a bash block of the README or a docs page parses with the real CLI parser."""
    import shlex

    from kexue.cli import _parse, build_parser

    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    cmds = [(p, c) for p in pages if "_build" not in p.parts for c in _kexue_commands(
        p.read_text(encoding="utf-8"))]  # fmt: skip
    assert len(cmds) >= 20
    for page, cmd in cmds:
        argv = [a for a in shlex.split(cmd)[1:] if a != "\\"]
        try:
            args = _parse(build_parser(), argv)
        except SystemExit as e:  # argparse's own exit
            raise AssertionError(f"{page.name}: `{cmd}` does not parse") from e
        assert callable(getattr(args, "func", None)), f"{page.name}: `{cmd}`"
