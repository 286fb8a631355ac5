"""MkDocs hooks for this site (``hooks:`` in mkdocs.yml); not a page.

The docstrings end with bare doctest examples (``>>>`` lines, no fences): they
run under ``pytest --doctest-modules``. Outside an ``Examples:`` section griffe
passes them on as text, and Markdown reads ``>>>`` as three nested blockquotes.
The extension below fences each paragraph that starts with ``>>>`` as a
``pycon`` code block before the page's fences are read, so it is highlighted
and copyable like every other code block of the site. (markdown-pycon 1.0.2, the
extension mkdocstrings suggests for this, fails with pymdown-extensions 12.3 and 13.1.)
"""

from __future__ import annotations

import re
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")


class DoctestFences(Preprocessor):
    """Wrap each unfenced paragraph that starts with ``>>>`` in a ``pycon`` fence."""

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        fence = ""  # the fence of the code block we are in, if any
        in_doctest = False
        for line in lines:
            if in_doctest and not line.strip():
                out.append("```")
                in_doctest = False
            if in_doctest:
                out.append(DOCTEST_FLAG.sub("", line))
                continue
            opening = FENCE.match(line)
            if fence:
                if opening and opening.group(1).startswith(fence) and not line.strip().strip(fence[0]):
                    fence = ""
            elif opening:
                fence = opening.group(1)
            elif line.startswith(">>>") and (not out or not out[-1].strip()):
                out.append("```pycon")
                in_doctest = True
                line = DOCTEST_FLAG.sub("", line)
            out.append(line)
        if in_doctest:
            out.append("```")
        return out


class DoctestFencesExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        # Before pymdownx.superfences (25) reads the fences, after snippets (32) inserts text.
        md.preprocessors.register(DoctestFences(md), "doctest_fences", 28)


@event_priority(100)  # early: mkdocstrings hands these extensions on to the docstrings' own Markdown
def on_config(config: Any) -> Any:
    config.markdown_extensions.append(DoctestFencesExtension())
    return config
