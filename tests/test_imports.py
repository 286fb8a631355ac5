"""The package's import graph: no cycle, and the layers ``docs/architecture.md`` lists, lowest first.

Every import counts, at run time or not: those under ``TYPE_CHECKING`` and
those inside functions too. A cycle closed only for the type checker is
still a design knot (the task API holding executors, a job and its slot
pointing at each other); this test is what keeps them from coming back.
"""

from __future__ import annotations

import ast
import graphlib
import pathlib
import re
from typing import Dict, List, Set

import pytest

pytestmark = pytest.mark.timeout(30)

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "localabort"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
#: The package's entry points, which sit above every layer.
ENTRY_POINTS = {"__init__", "__main__"}


def imports_of(path: pathlib.Path, modules: Set[str]) -> Set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
            elif node.level == 0 and node.module == "localabort":
                names = [alias.name for alias in node.names]
            elif node.level == 0 and (node.module or "").startswith("localabort."):
                names = [node.module.split(".")[1]]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("localabort.")]
        else:
            continue
        found.update(name.split(".")[0] for name in names)
    return found & modules - {path.stem}


def graph(package: pathlib.Path = PACKAGE) -> Dict[str, Set[str]]:
    paths = {path.stem: path for path in package.glob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def documented_layers() -> List[List[str]]:
    """The modules of ``docs/architecture.md``'s table, row by row, lowest first."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("## Modules, lowest first", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([\w.]+)`", cell) for cell in rows]


def test_the_package_has_no_import_cycle():
    graphlib.TopologicalSorter(graph()).prepare()  # raises CycleError naming the cycle


def test_the_cycle_check_sees_a_knot_put_back(tmp_path):
    """A test that cannot fail proves nothing: put the task API's old knot back in a copy, and see it caught."""
    for path in PACKAGE.glob("*.py"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    task = tmp_path / "_task.py"
    task.write_text(task.read_text() + "\nif TYPE_CHECKING:\n    from ._executor import Executor\n")
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph(tmp_path)).prepare()
    slot_then_job = tmp_path / "_jobs.py"
    (tmp_path / "_task.py").write_text((PACKAGE / "_task.py").read_text())
    slot_then_job.write_text(slot_then_job.read_text() + "\ndef _slot_of(job):\n    from ._slot import Slot\n")
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph(tmp_path)).prepare()


def test_the_architecture_table_lists_every_module_once_in_import_order():
    layers = documented_layers()
    listed = [name for layer in layers for name in layer]
    modules = set(graph()) - ENTRY_POINTS
    assert sorted(listed) == sorted(modules), "docs/architecture.md's table must list each module once"
    row = {name: number for number, layer in enumerate(layers) for name in layer}
    upward = sorted(
        f"{module} imports {imported}"
        for module, imported_set in graph().items()
        if module not in ENTRY_POINTS
        for imported in imported_set
        if row[imported] > row[module]
    )
    assert upward == [], "an import runs up docs/architecture.md's table"
