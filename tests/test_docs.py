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
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
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
