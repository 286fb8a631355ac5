"""The recorder: an executor's store writes in a process of their own, and what the executor does when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool

import pytest

from localabort import SUCCESS, Executor, _recorder
from localabort._states import READY_STATES, task_row
from localabort._store import Store

from . import tasks
from .conftest import pool, started, wait_for


@pytest.fixture(autouse=True)
def at_once(monkeypatch):
    """The recorder starts at the first write, not once the writes made in the parent cost ``START_AFTER``."""
    monkeypatch.setattr(_recorder, "START_AFTER", 0.0)


def test_a_short_batch_starts_no_recorder(start_method, store_path, monkeypatch):
    monkeypatch.setattr(_recorder, "START_AFTER", 3600.0)
    with pool(store_path, start_method) as ex:
        assert [f.result(timeout=30) for f in [ex.submit(tasks.add, i, 1) for i in range(5)]] == [1, 2, 3, 4, 5]
        assert ex._manager._writer.pid is None
    assert {record.state for record in Store.open(store_path).tasks()} == {SUCCESS}


def test_the_recorder_is_a_process_of_the_executor_that_ends_with_it(start_method, store_path):
    with pool(store_path, start_method) as ex:
        futures = [ex.submit(tasks.add, i, 1) for i in range(50)]
        assert [f.result(timeout=30) for f in futures] == list(range(1, 51))
        recorder = ex._manager._writer.pid
        assert recorder not in {slot.pid for slot in ex._scheduler.slots} | {os.getpid(), None}
        assert {record.state for record in ex.store.tasks([f.id for f in futures])} == {SUCCESS}
        os.kill(recorder, 0)  # alive while the executor is
    with pytest.raises(ProcessLookupError):  # exited and reaped at shutdown
        os.kill(recorder, 0)


def test_a_killed_recorder_breaks_the_executor_and_leaves_no_row_unfinished(start_method, store_path):
    """Its last write is lost with it: the executor writes every row itself as it breaks, and says why."""
    ex = Executor(max_workers=2, store=store_path, mp_context=start_method)
    try:
        done = ex.submit(tasks.add, 1, 2)
        assert done.result(timeout=30) == 3
        running = ex.submit(tasks.Spin)  # its progress makes a write every few milliseconds
        wait_for(lambda: started(running), what="the spinner")
        recorder = ex._manager._writer.pid
        os.kill(recorder, signal.SIGKILL)
        why = rf"store writer process \(pid {recorder}\) (was killed by SIGKILL|is not answering)"
        with pytest.raises(BrokenProcessPool, match=why):
            running.result(timeout=30)
        with pytest.raises(BrokenProcessPool, match=why):
            ex.submit(tasks.add, 1, 1)
    finally:
        ex.shutdown()
    reader = Store(store_path, create=False)
    try:
        rows = {record.id: record.state for record in reader.tasks(outcomes=False)}
    finally:
        reader.dispose()
    assert rows[done.id] == SUCCESS and set(rows.values()) <= READY_STATES, rows


def test_a_recorder_that_cannot_start_leaves_the_writes_in_this_process(start_method, store_path, monkeypatch):
    """No process to be had (descriptors or memory run out): the batch goes on, its writes made here, as before."""

    def no_process(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_recorder.subprocess, "Popen", no_process)
    with pool(store_path, start_method) as ex:
        futures = [ex.submit(tasks.add, i, 1) for i in range(50)]
        assert [f.result(timeout=30) for f in futures] == list(range(1, 51))
        assert ex._manager._writer.pid is None
    assert {record.state for record in Store.open(store_path).tasks()} == {SUCCESS}


_DIRECT = """
import json, sys
from localabort._recorder import _writer_for
from localabort._states import RECEIVED, SUCCESS, task_row
url, name, connect, executor_id = json.loads(sys.argv[1])
sync = _writer_for(url, name, connect, executor_id)
row = task_row("t-direct", executor_id=executor_id, name="tests.tasks.add", state=SUCCESS, submitted_at=1.0)
claim = task_row("t-claimed", executor_id=executor_id, name="tests.tasks.add", state="PENDING", submitted_at=1.0)
asked = {**task_row("t-asked", executor_id=executor_id, name="tests.tasks.add", state="PENDING", submitted_at=1.0),
         "abort_requested_at": 1.5}
sync([row, claim], [asked], [], 2.0)
aborted, held = sync([], [], [("t-claimed", "tests.tasks.add", None), ("t-asked", "tests.tasks.add", None)], None)
print(json.dumps({"aborted": aborted, "held": held, "sqlalchemy": "sqlalchemy" in sys.modules}))
"""


def test_on_sqlite_the_recorder_writes_with_sqlite3_alone(store_path):
    """Its writes are the parent's statements, and it never imports SQLAlchemy: ready in 90 ms, not 350."""
    store = Store.open(store_path, create=True)
    target = [store.url, store.name, store.driver_connect(), "ex-1"]
    ran = subprocess.run([sys.executable, "-c", _DIRECT, json.dumps(target)], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    answer = json.loads(ran.stdout.splitlines()[0])
    assert answer == {"aborted": ["t-asked"], "held": {}, "sqlalchemy": False}
    found = {record.id: record.state for record in store.tasks(["t-direct", "t-claimed", "t-asked"])}
    assert found == {"t-direct": SUCCESS, "t-claimed": "RECEIVED", "t-asked": "RECEIVED"}


def test_the_recorders_sqlite_failure_is_a_store_error_naming_the_store(store_path):
    Store.open(store_path, create=True)
    url = f"sqlite:///file:{store_path}?mode=ro&uri=true"
    target = [url, store_path, Store.open(url).driver_connect(), "ex-1"]
    ran = subprocess.run([sys.executable, "-c", _DIRECT, json.dumps(target)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert ran.returncode != 0
    last = ran.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("localabort.StoreError: ") and f"{store_path}: cannot write the store (attempt to write" in last
    )


def test_the_recorders_writes_never_checkpoint_a_thread_of_its_own_does(store_path):
    """A checkpoint syncs the file to disk (12-18 ms): in a write, it would hold up the claims the workers wait for."""
    store = Store.open(store_path, create=True)
    writes = _recorder._writer_for(store.url, store.name, store.driver_connect(), "ex-1")
    try:
        assert writes.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for i in range(30):  # past SQLite's 1,000 pages of WAL, where a write would checkpoint
            writes([task_row(f"t{i}-{j}", executor_id="ex-1", name="tests.tasks.add", state=SUCCESS,
                             submitted_at=1.0, result=b"x" * 2000) for j in range(40)], [], [], None)  # fmt: skip
        wait_for(lambda: writes.checkpoints.made > 0, what="a checkpoint of every page by the recorder's thread")
    finally:
        writes.close()
    assert not writes.checkpoints._thread.is_alive()
    assert len(store.tasks()) == 30 * 40
