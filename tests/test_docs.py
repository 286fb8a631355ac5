"""Every Python example in the docs and the README runs, as a reader would run it.

Per page, in a fresh folder holding ``examples/crunch.py``:

- a ```` ```python ```` block whose first line is ``# file: NAME.py`` is
  written to that file (a module the page's other code imports);
- the page's other Python blocks, in order, form one script, which must
  exit 0;
- an HTML comment ``<!-- docs-test: python NAME.py -->`` runs that
  command too, as the page tells the reader to.

Blocks that include lines of ``examples/`` (``--8<--``) are skipped here:
the example files run in their own tests. Shell and ``text`` blocks are not
Python examples.

The site is also built here, as ``nox -s docs`` builds it, and read as a
reader's browser would: the API page's Google-style sections are tables,
its ``>>>`` examples code blocks, and no page waits on a script from the
network.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
COMMAND = re.compile(r"<!-- docs-test: (.*?) -->")
FILE = re.compile(r"# file: (\S+)\n")


def examples(page: Path):
    """The page's files, its script, and the commands it tells the reader to run."""
    text = page.read_text()
    files, script = {}, []
    for block in BLOCK.findall(text):
        if "--8<--" in block:
            continue
        name = FILE.match(block)
        if name:
            files[name.group(1)] = block[name.end() :]
        else:
            script.append(block)
    return files, "\n".join(script), COMMAND.findall(text)


RUNNABLE = [page for page in PAGES if any(examples(page))]


def test_every_page_with_python_is_run():
    names = {page.name for page in RUNNABLE}
    assert {"README.md", "quickstart.md", "tasks.md", "executor.md", "states.md", "store.md"} <= names


@pytest.mark.timeout(180)
@pytest.mark.parametrize("page", RUNNABLE, ids=[page.name for page in RUNNABLE])
def test_page_examples_run(page, tmp_path):
    files, script, commands = examples(page)
    shutil.copy(ROOT / "examples" / "crunch.py", tmp_path)
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    runs = [[sys.executable, "-c", script]] if script.strip() else []
    runs += [[sys.executable if word == "python" else word for word in shlex.split(c)] for c in commands]
    assert runs, f"{page.name}: nothing to run"
    for argv in runs:
        out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
        assert out.returncode == 0, f"{page.name}: {' '.join(argv[1:])[:80]} failed:\n{out.stderr[-3000:]}"


# -- The built site -------------------------------------------------------------


class _Html(HTMLParser):
    """A page's text runs, each with the tags open around it; its table rows; every element's tag and class."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.texts: list[tuple[tuple[str, ...], str]] = []
        self.rows: list[list[str]] = []
        self.classes: list[tuple[str, str]] = []
        self.pres: list[str] = []  # the text of each <pre> block
        self.feed(html)
        self.rows = [[" ".join(cell.split()) for cell in row] for row in self.rows]

    def handle_starttag(self, tag, attrs):
        self.classes.append((tag, dict(attrs).get("class") or ""))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self.rows[-1].append("")
        elif tag == "pre":
            self.pres.append("")
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data):
        self.texts.append((tuple(self.open), data))
        if ("td" in self.open or "th" in self.open) and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data
        if "pre" in self.open and self.pres:
            self.pres[-1] += data


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation site, built as ``nox -s docs`` builds it (strict: a warning fails it)."""
    pytest.importorskip("mkdocs", reason="the docs toolchain is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr[-3000:]}"
    return out


@pytest.mark.timeout(180)
def test_api_page_renders_google_style_sections(site):
    page = _Html((site / "api" / "index.html").read_text())
    # Executor's "Args:" is a parameters table: name, type, description, default.
    rows = {row[0]: row for row in page.rows if row}
    assert "max_workers" in rows, "no parameters table naming Executor's max_workers"
    _, annotation, description, default = rows["max_workers"]
    assert "int" in annotation and description and default == "None", rows["max_workers"]
    # Its "Raises:" is a table too.
    assert "StoreError" in rows, "no exceptions table naming StoreError"
    titles = {text for tags, text in page.texts if text.endswith(":") and "p" in tags}
    assert {"Parameters:", "Raises:"} <= titles, titles


@pytest.mark.timeout(180)
def test_api_page_doctests_are_code_blocks(site):
    page = _Html((site / "api" / "index.html").read_text())
    prompts = [tags for tags, text in page.texts if ">>>" in text]
    assert len(prompts) > 20, "the docstrings' >>> examples are missing from the API page"
    outside = [tags for tags in prompts if not {"pre", "code"} <= set(tags)]
    assert not outside, f"{len(outside)} >>> lines outside a <pre><code> block, e.g. in {outside[0]}"
    assert not any(tag == "blockquote" for tag, _ in page.classes), "a docstring line became a <blockquote>"
    # Executor's own example: prompt, continuation and output in one block.
    block = next((pre for pre in page.pres if ">>> with Executor(max_workers=2) as ex:" in pre), "")
    assert "\n... " in block and "\n[1, 2, 3]" in block, block or "Executor's example is not in a <pre> block"


@pytest.mark.timeout(180)
def test_site_loads_no_diagram_script_from_the_network(site):
    """A mermaid block makes Material fetch mermaid.js from a CDN; the diagrams are text blocks instead."""
    for html in site.rglob("*.html"):
        page = _Html(html.read_text())
        assert not any("mermaid" in cls.split() for _, cls in page.classes), f"{html.relative_to(site)} has mermaid"
    states = _Html((site / "states" / "index.html").read_text())
    assert any("pre" in tags and "RECEIVED --" in text for tags, text in states.texts), "no state diagram"
