"""Progress bars in the producer: Executor(progress=True)."""

from __future__ import annotations

from localabort import Executor

from . import tasks
from .conftest import pool, wait_for


def test_executor_draws_batch_and_task_bars(store_path, capsys):
    seen = []

    def drawn(text):
        seen.append(capsys.readouterr().err.replace("\r", "\n"))
        return text in "".join(seen)

    with pool(store_path, "fork", 2, progress=True) as ex:
        futures = [ex.submit(tasks.Crunch, 3), ex.submit(tasks.Fail, "x")]
        futures[0].result(timeout=30)
        futures += [ex.submit(tasks.Ticker, 60) for _ in range(2)]
        wait_for(lambda: all(f.state == "STARTED" for f in futures[2:]), what="both Tickers to start")
        wait_for(lambda: drawn("Ticker "), what="a running task's own bar")
        futures[3].abort()
        futures[2].abort()
        for f in futures:
            f.exception(timeout=30)
    drawn("")
    assert any("batch: 100%" in line and "4/4" in line and "ok=1 aborted=2 failed=1" in line
               for line in "".join(seen).splitlines())  # fmt: skip


def test_no_bars_unless_asked(store_path, capsys):
    with Executor(max_workers=1, store=store_path, mp_context="fork") as ex:
        ex.submit(tasks.Crunch, 10).result(timeout=30)
    assert capsys.readouterr().err == ""
