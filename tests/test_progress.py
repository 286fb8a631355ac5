"""Progress bars in the producer: Executor(progress=...)."""

from __future__ import annotations

import io

from localabort import Executor

from . import tasks
from .conftest import pool, wait_for


def test_executor_draws_batch_and_task_bars(store_path):
    out = io.StringIO()

    def drawn(text):
        return text in out.getvalue()

    with pool(store_path, "fork", 2, progress=out) as ex:
        futures = [ex.submit(tasks.Crunch, 3), ex.submit(tasks.Fail, "x")]
        futures[0].result(timeout=30)
        futures += [ex.submit(tasks.Ticker, 60) for _ in range(2)]
        wait_for(lambda: all(f.state == "STARTED" for f in futures[2:]), what="both Tickers to start")
        wait_for(lambda: drawn("Ticker "), what=f"a running task's own bar; drawn so far: {out.getvalue()[-400:]!r}")
        futures[3].abort()
        futures[2].abort()
        for f in futures:
            f.exception(timeout=30)
    lines = out.getvalue().replace("\r", "\n").splitlines()
    assert any("batch: 100%" in line and "4/4" in line and "ok=1 aborted=2 failed=1" in line for line in lines)


def test_bars_go_to_stderr_when_asked_and_nowhere_otherwise(store_path, capsys):
    with Executor(max_workers=1, store=store_path, mp_context="fork") as ex:
        ex.submit(tasks.Crunch, 10).result(timeout=30)
    assert capsys.readouterr().err == ""
    with Executor(max_workers=1, store=store_path, mp_context="fork", progress=True) as ex:
        ex.submit(tasks.Crunch, 10).result(timeout=30)
    assert "batch: 100%" in capsys.readouterr().err
