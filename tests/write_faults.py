"""Every store write may fail: the batch ``test_write_faults`` runs, in a process of its own, and its checks.

Run as ``python -m tests.write_faults FOLDER START_METHOD`` with
``LOCALABORT_TEST_FAULTS=FOLDER`` and ``tests/faults_site`` first on
``PYTHONPATH``: every Python process of the run (this one, the executor's
recorder and its workers, under any start method, the fork server's
children too, since the fork server starts in this run) then loads
``faults_site/sitecustomize.py``, whose ``install`` makes the ``sqlite3``
connections SQLAlchemy, ``Store``'s own (``_sqlite``) and the recorder open a subclass whose cursors and commits count
the writes (``INSERT``, ``UPDATE``, ``DELETE`` and each ``COMMIT``) in
one file under FOLDER, shared by all, and make the N-th raise the
driver's own ``OperationalError``. The store runs its real code. A first
run counts the writes the batch makes; then the batch runs once per N,
each checked as ``check`` says; a failed check raises (exit status 1).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from localabort import ABORTED, Executor, StoreError, TaskAborted, _recorder
from localabort._states import READY_STATES
from localabort._store import Store

from . import tasks
from .conftest import ROOT, wait_for

#: The variable naming the folder of the shared counter; set, every process counts its writes there.
FOLDER = "LOCALABORT_TEST_FAULTS"

WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|COMMIT)\b", re.IGNORECASE)


class Faults:
    """The write counter of every process of the run, in files of ``folder``; the armed write raises."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def arm(self, fail_at: Optional[int]) -> None:
        """Count from zero; the ``fail_at``-th write (``None``: none) raises."""
        for name in ("count", "fired", "writers"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(name))
        with open(self._path("fail_at"), "w") as f:
            f.write("" if fail_at is None else str(fail_at))

    @property
    def count(self) -> int:
        try:
            return os.path.getsize(self._path("count"))
        except FileNotFoundError:
            return 0

    @property
    def writers(self) -> set:
        """The pids of the processes that wrote since ``arm``."""
        try:
            with open(self._path("writers")) as f:
                return {int(line) for line in f}
        except FileNotFoundError:
            return set()

    @property
    def fired(self) -> bool:
        return os.path.exists(self._path("fired"))

    def write(self) -> None:
        with open(self._path("count"), "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # one count at a time, across processes
            f.write(b"w")
            f.flush()
            count = os.fstat(f.fileno()).st_size
            with open(self._path("writers"), "a") as writers:  # which processes write: the recorder among them
                writers.write(f"{os.getpid()}\n")
            with open(self._path("fail_at")) as armed:
                fail_at = armed.read()
            if fail_at and count == int(fail_at):
                open(self._path("fired"), "w").close()
                raise sqlite3.OperationalError(f"disk I/O error (injected at write {count})")


FAULTS = Faults(os.environ.get(FOLDER, ""))


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


def run_batch(folder: Path, start_method: str, fail_at: Optional[int]) -> Dict[str, Any]:
    """One mixed batch of 40 tasks on a new store in ``folder``; what each future said, and what ran."""
    folder.mkdir()
    store, go = str(folder / "s.sqlite"), str(folder / "go")
    FAULTS.arm(fail_at)
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
    with contextlib.suppress(BaseException):  # from here the recorder makes the writes, so its faults are met too
        wait_for(lambda: ex._manager._writer.ready or ex._scheduler.broken is not None, timeout=10, what="recorder")
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
            raise AssertionError(
                f"{kind} [{task_id}] never completed, with write {fail_at} failing ({FAULTS.fired=})"
            ) from None
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
            "ex": ex, "recorder": ex._manager._writer.pid}  # fmt: skip


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


def install() -> None:
    """This process's SQLite connections count their writes in ``FOLDER``'s counter (``sitecustomize`` calls it).

    Both names of ``connect``: SQLAlchemy's (``sqlite3.dbapi2``), and ``_sqlite``'s and the recorder's (``sqlite3``).
    """
    real = sqlite3.dbapi2.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return real(*args, factory=FaultyConnection, **kwargs)

    sqlite3.dbapi2.connect = connect  # type: ignore[assignment]
    sqlite3.connect = connect  # type: ignore[assignment]


def main() -> None:
    folder, start_method = Path(sys.argv[1]), sys.argv[2]
    _recorder.START_AFTER = 0.0  # the recorder makes the writes from the first one it is ready for
    clean = run_batch(folder / "clean", start_method, None)
    check(clean, None)
    writes = FAULTS.count
    assert writes > 10, writes  # the counter sees the store's writes
    assert clean["recorder"] in FAULTS.writers, (clean["recorder"], FAULTS.writers)  # the recorder's among them
    assert len(clean["met_pending"]) >= 4, clean["met_pending"]  # the four aborted from their futures met them PENDING
    for n in range(1, writes + 1):
        run = run_batch(folder / f"fail-{n}", start_method, n)
        check(run, n)
    print(f"{writes} writes, each failed once: every check held")


if __name__ == "__main__":
    main()
