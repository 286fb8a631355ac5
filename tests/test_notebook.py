"""A notebook through a real Jupyter kernel (ipykernel, driven by nbclient): tasks from cells, bars, the stop button."""

from __future__ import annotations

import pytest

from localabort import ABORTED, SUCCESS
from localabort._store import Store

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbclient, nbformat and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient, nbformat and ipykernel")

DEFINE = """
import time
from localabort import AbortableTask, Executor, TaskAborted

class Crunch(AbortableTask):
    def run(self, n):
        for i in range(n):
            if self.is_aborted():
                return i
            self.progress(i + 1, n)
            time.sleep(0.01)
        return n
"""

FIRST_BATCH = """
ex = Executor(max_workers=2, store=STORE, mp_context="spawn", progress=True)
square = lambda x: x * x
long = ex.submit(Crunch, 10**6)
print(ex.submit(square, 7).result(timeout=60), ex.submit(Crunch, 30).result(timeout=60))
while long.progress is None:
    time.sleep(0.01)
long.abort()
try:
    long.result(timeout=60)
except TaskAborted as exc:
    print("aborted after", exc.partial_result > 0)
ex.shutdown()
"""

# The cell the stop button interrupts (nbclient interrupts the kernel when the cell's time is up).
STOPPED_BATCH = """
with Executor(max_workers=2, store=STORE, mp_context="spawn") as batch:
    futures = [batch.submit(Crunch, 3000) for _ in range(6)]  # 30 s each
    for f in futures:
        f.result()
"""

AFTER = """
with Executor(max_workers=1, store=STORE, mp_context="spawn") as again:
    print("alive", again.submit(lambda: 40 + 2).result(timeout=60))
"""


@pytest.mark.timeout(240)
@pytest.mark.leaks_ok("pyzmq's process-wide context keeps the sockets jupyter_client made in it")
def test_a_notebook_runs_cell_defined_tasks_shows_bars_and_stops_gracefully_on_interrupt(tmp_path):
    store = str(tmp_path / "notebook.sqlite")
    sources = [DEFINE, FIRST_BATCH, STOPPED_BATCH, AFTER]
    cells = [nbformat.v4.new_code_cell(source.replace("STORE", repr(store))) for source in sources]
    notebook = nbformat.v4.new_notebook(cells=cells)
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True, resources={
            "metadata": {"path": str(tmp_path)}},
        timeout_func=lambda cell: 12 if "futures = [batch.submit" in cell.source else 180,
    )  # fmt: skip
    client.execute()
    first, stopped, after = (cell.outputs for cell in notebook.cells[1:])

    text = "".join(out.get("text", "") for out in first if out["output_type"] == "stream" and out["name"] == "stdout")
    assert text.split() == ["49", "30", "aborted", "after", "True"], first
    bars = "".join(out.get("text", "") for out in first if out["output_type"] == "stream" and out["name"] == "stderr")
    assert "Crunch" in bars and "%" in bars, first  # localabort.progress's bars, in the cell's output

    errors = [out for out in stopped if out["output_type"] == "error"]
    assert [out["ename"] for out in errors] == ["KeyboardInterrupt"], stopped  # interrupted, as a user stops it
    said = "".join(out.get("text", "") for out in stopped if out["output_type"] == "stream")
    assert "abort" in said, stopped  # the one line saying what the interrupt did

    assert [out.get("text") for out in after if out["output_type"] == "stream"] == ["alive 42\n"], after
    records = Store.open(store).tasks()
    batch = [r for r in records if r.name == "__main__.Crunch" and r.args_repr == "3000"]
    assert len(batch) == 6 and {r.state for r in batch} <= {ABORTED, SUCCESS}  # every task ended, recorded
    assert ABORTED in {r.state for r in batch}
    assert any(r.name.startswith("__main__.<lambda> (") for r in records)  # where the lambda was defined
