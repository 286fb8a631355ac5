"""Every store write may fail: a mixed batch, with the N-th write failing, for every N, under each start method.

The fault is injected at the DB-API boundary, in this test only: the
``sqlite3`` connections SQLAlchemy makes in this process are a subclass
whose cursors and commits count the writes (``INSERT``, ``UPDATE``,
``DELETE`` and each ``COMMIT``) and make the N-th raise the driver's own
``OperationalError``. The store runs its real code. A first run counts
the writes the batch makes; then the batch runs once per N.

For every N: nothing hangs; every future completes, with its result, the
task's own exception, or ``BrokenExecutor``; a future's SUCCESS is the
store's; no task whose abort met it PENDING ran; once the executor has
settled, every row is final and ``PRAGMA integrity_check`` says ok.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from localabort import ABORTED, Executor, StoreError, TaskAborted
from localabort._states import READY_STATES
from localabort._store import Store

from . import tasks
from .conftest import ROOT, wait_for

pytestmark = pytest.mark.timeout(900)

WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


class Faults:
    """The write counter, shared by every connection of this process; ``fail_at``: the write that raises."""

    def __init__(self) -> None:
        self.count = 0
        self.fail_at: Optional[int] = None
        self.fired = False

    def write(self) -> None:
        self.count += 1
        if self.count == self.fail_at:
            self.fired = True
            raise sqlite3.OperationalError(f"disk I/O error (injected at write {self.count})")


FAULTS = Faults()


class FaultyCursor(sqlite3.Cursor):
    def execute(self, sql: str, *args: Any) -> Any:  # type: ignore[override]
        if WRITES.match(sql):
            FAULTS.write()
        return super().execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:  # type: ignore[override]
        if WRITES.match(sql):
            FAULTS.write()
        return super().executemany(sql, *args)


class FaultyConnection(sqlite3.Connection):
    def cursor(self, factory: Any = FaultyCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, *args: Any) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, *args)

    def commit(self) -> None:
        if self.in_transaction:
            FAULTS.write()
        super().commit()


@pytest.fixture
def faulty(monkeypatch):
    """This process's SQLite connections count their writes (the store's real code, the driver's errors)."""
    real = sqlite3.dbapi2.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return real(*args, factory=FaultyConnection, **kwargs)

    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect)
    FAULTS.count, FAULTS.fail_at, FAULTS.fired = 0, None, False
    yield FAULTS
    FAULTS.fail_at = None
    for store in list(Store._open_stores.values()):  # no connection of this test's class outlives it
        store.dispose()
    Store._open_stores.clear()


def run_batch(folder: Path, start_method: str, fail_at: Optional[int]) -> Dict[str, Any]:
    """One mixed batch of 40 tasks on a new store in ``folder``; what each future said, and what ran."""
    folder.mkdir()
    store, go = str(folder / "s.sqlite"), str(folder / "go")
    FAULTS.count, FAULTS.fail_at, FAULTS.fired = 0, fail_at, False
    said: Dict[str, str] = {}
    met_pending: List[str] = []  # ids whose recorded abort met them PENDING: they must never run
    try:
        ex = Executor(max_workers=2, store=store, mp_context=start_method)
    except StoreError:
        return {"said": said, "met_pending": {}, "store": store, "ex": None}
    futures: Dict[str, Any] = {}

    def submit(kind: str, fn: Any, *args: Any) -> Any:
        try:
            future = ex.submit(fn, *args)
        except (StoreError, concurrent.futures.BrokenExecutor):
            return None
        futures[future.id] = (kind, future)
        return future

    def ledger(name: str) -> str:
        return str(folder / f"ran-{name}")

    blockers = [submit("blocker", tasks.Ledger, ledger(f"b{i}"), i, go) for i in range(2)]
    with contextlib.suppress(BaseException):
        wait_for(lambda: all(f is None or f.running() or f.done() for f in blockers), timeout=10, what="blockers")
    queued = [submit("pending", tasks.Ledger, ledger(f"p{i}"), i) for i in range(6)]
    ledger_of = {future.id: ledger(f"p{i}") for i, future in enumerate(queued) if future is not None}
    cancelled = submit("cancel", tasks.Ledger, ledger("c"), 0)
    for i in range(25):
        submit("add", tasks.add, i, 1)
    for i in range(3):
        submit("fail", tasks.Fail, f"no {i}")
    submit("retry", tasks.Flaky, 1)
    submit("progress", tasks.Crunch, 50)
    spin = submit("spin", tasks.Spin)
    for future in queued[:4]:  # from the future, while PENDING
        if future is None:
            continue
        try:
            if future.abort() and future.done() and future.state == ABORTED:
                met_pending.append(future.id)
        except StoreError:
            pass
    others = [future.id for future in queued[4:] if future is not None]  # from another process: the CLI
    if others:
        cli = subprocess.run([sys.executable, "-m", "localabort", "abort", store, *others], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
        met_pending += re.findall(r"abort requested: (\S+) \(\S+, PENDING\)", cli.stdout)
    if cancelled is not None:
        with contextlib.suppress(StoreError):
            cancelled.cancel()
    Path(go).touch()
    if spin is not None:
        with contextlib.suppress(BaseException):
            wait_for(lambda: spin.running() or spin.done(), timeout=10, what="the spinner")
        with contextlib.suppress(StoreError):
            spin.abort()
    for task_id, (kind, future) in futures.items():
        try:
            value = future.result(timeout=60)  # a hang fails here
            said[task_id] = f"{kind}: SUCCESS {value!r}"
        except concurrent.futures.TimeoutError:
            ex.kill_workers()
            pytest.fail(f"{kind} [{task_id}] never completed, with write {fail_at} failing ({FAULTS.fired=})")
        except concurrent.futures.BrokenExecutor:
            said[task_id] = f"{kind}: broken"
        except concurrent.futures.CancelledError:
            said[task_id] = f"{kind}: {'cancelled' if kind in ('cancel', 'pending', 'spin') else 'UNEXPECTED cancel'}"
        except TaskAborted:
            said[task_id] = f"{kind}: aborted"
        except ValueError:
            said[task_id] = f"{kind}: {'failed' if kind == 'fail' else 'UNEXPECTED ValueError'}"
    ex.shutdown()
    return {"said": said, "met_pending": {i: ledger_of[i] for i in met_pending if i in ledger_of}, "store": store,
            "ex": ex}  # fmt: skip


def check(run: Dict[str, Any], n: Optional[int]) -> None:
    what = f"with write {n} failing" if n is not None else "with no fault"
    said, store = run["said"], run["store"]
    assert not [s for s in said.values() if "UNEXPECTED" in s], (what, said)
    if run["ex"] is None:  # the store could not be made: nothing ran, nothing to check
        return
    ran = [task_id for task_id, path in run["met_pending"].items() if os.path.exists(path)]
    assert ran == [], (what, "ran though its abort met it PENDING", ran)
    reader = Store(store, create=False)
    try:
        deadline = time.monotonic() + 15  # a broken executor writes what it owes within a second or so
        while True:
            rows = {record.id: record.state for record in reader.tasks(outcomes=False)}
            if set(rows.values()) <= READY_STATES or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert set(rows.values()) <= READY_STATES, (what, rows)
        for task_id, outcome in said.items():
            if ": SUCCESS" in outcome:
                assert rows.get(task_id) == "SUCCESS", (what, task_id, outcome, rows.get(task_id))
    finally:
        reader.dispose()
    with contextlib.closing(sqlite3.connect(store)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], what


def test_every_write_may_fail_once(faulty, start_method, tmp_path):
    clean = run_batch(tmp_path / "clean", start_method, None)
    check(clean, None)
    writes = faulty.count
    assert writes > 10  # the counter sees the store's writes
    assert len(clean["met_pending"]) >= 4  # the four aborted from their futures met them PENDING
    for n in range(1, writes + 1):
        run = run_batch(tmp_path / f"fail-{n}", start_method, n)
        check(run, n)
