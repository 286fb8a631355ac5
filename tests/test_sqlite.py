"""``_sqlite``: an SQLite store made, checked and written with ``sqlite3`` alone, as SQLAlchemy would.

Real store files throughout; where the point is what a process imports, a
fresh interpreter runs the executor.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys

import pytest

from localabort import ABORTED, SUCCESS, StoreError
from localabort._sql import SCHEMA_VERSION, SQLITE_CONNECT, write
from localabort._sqlite import SCHEMA, Connections, prepare
from localabort._store import Store

from .test_store import SCHEMA_1, row, sql

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_schema_text_is_what_sqlalchemy_makes_of_the_tables():
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from localabort._schema import conditions_for, metadata

    conditions_for("sqlite")
    dialect = sqlite.dialect()
    made = []
    for table in metadata.sorted_tables:
        made.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        made += [
            str(CreateIndex(index).compile(dialect=dialect)) for index in sorted(table.indexes, key=lambda i: i.name)
        ]
    assert list(SCHEMA) == made


def schema_of(path):
    return sorted(sql(path, "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_a_store_made_with_sqlite3_is_the_one_sqlalchemy_makes(tmp_path):
    ours, theirs = str(tmp_path / "ours.sqlite"), str(tmp_path / "theirs.sqlite")
    Store(ours).dispose()
    import sqlalchemy as sa

    from localabort._schema import conditions_for, metadata

    conditions_for("sqlite")
    engine = sa.create_engine(f"sqlite:///{theirs}")
    metadata.create_all(engine)
    engine.dispose()
    assert schema_of(ours) == schema_of(theirs)
    assert sql(ours, "SELECT name, value FROM localabort_meta") == [("schema", str(SCHEMA_VERSION))]
    assert sql(ours, "PRAGMA journal_mode") == [("wal",)]


def test_what_prepare_leaves_to_sqlalchemy(tmp_path):
    """An older schema, a database of another application's, a store half made: ``None``, and nothing written."""
    older, foreign, half = (str(tmp_path / name) for name in ("older.sqlite", "foreign.sqlite", "half.sqlite"))
    with contextlib.closing(sqlite3.connect(older)) as conn, conn:
        for statement in SCHEMA_1:
            conn.execute(statement)
    with contextlib.closing(sqlite3.connect(foreign)) as conn, conn:
        conn.execute("CREATE TABLE localabort_tasks (id TEXT)")
    with contextlib.closing(sqlite3.connect(half)) as conn, conn:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("DROP TABLE localabort_logs")
        conn.execute(f"INSERT INTO localabort_meta VALUES ('schema', '{SCHEMA_VERSION}')")
    for path in (older, foreign, half):
        before = schema_of(path)
        files = Connections(path)
        with files.connection() as conn:
            assert prepare(conn, create=True) is None
        files.close()
        assert schema_of(path) == before
    with pytest.raises(StoreError, match="is a database, but not a localabort store"):
        Store(foreign)


# An executor in a fresh interpreter: a batch, aborts of a running task and of queued ones, their states, the
# end; then aborts by id, of a finished task and of an unknown one.
BATCH = r"""
import sys
from localabort import ABORTED, AbortableAsyncResult, Executor, TaskAborted, UnknownTask
from tests import tasks

if __name__ == "__main__":
    ex = Executor(max_workers=1, store=sys.argv[1])
    assert [f.result(timeout=30) for f in [ex.submit(abs, -i) for i in range(50)]] == list(range(50))
    spinning = [ex.submit(tasks.Spin) for _ in range(4)]
    for future in spinning:
        assert future.abort()
    for future in spinning:
        try:
            future.result(timeout=30)
        except TaskAborted:
            pass
    assert [future.state for future in spinning] == [ABORTED] * 4
    ex.shutdown()
    finished = AbortableAsyncResult(spinning[0].id, store=sys.argv[1])
    assert finished.abort() is False and finished.state == ABORTED  # an abort by id, from any process
    try:
        AbortableAsyncResult("no-such-task", store=sys.argv[1]).abort()
    except UnknownTask:
        pass
    print("sqlalchemy" in sys.modules)
"""


def test_an_executor_on_an_sqlite_file_never_imports_sqlalchemy(tmp_path):
    path = str(tmp_path / "s.sqlite")
    for _ in range(2):  # made, then opened again
        out = subprocess.run([sys.executable, "-c", BATCH, path], capture_output=True, text=True, timeout=50, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["False"]
    store = Store.open(path)
    assert {r.state for r in store.tasks(limit=None)} == {SUCCESS, ABORTED}


def test_a_store_upgraded_once_opens_without_sqlalchemy_after(tmp_path):
    path = str(tmp_path / "v1.sqlite")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for statement in SCHEMA_1:
            conn.execute(statement)
    Store(path, create=True).dispose()  # upgraded through SQLAlchemy: columns added, not in SCHEMA's order
    files = Connections(path)
    with files.connection() as conn:
        assert prepare(conn, create=True) == SCHEMA_VERSION
    files.close()


def _read_in_child(store, inherited, queue):
    found = store.get("t1").state  # on the handle forked from the parent, its connection in hand
    (own,) = store._file._free
    queue.put((found, own is not inherited, store._file._inherited == [inherited]))


def test_a_forked_process_makes_its_own_connections(tmp_path):
    store = Store.open(str(tmp_path / "s.sqlite"), create=True)
    store.write([row("t1", SUCCESS)])  # the parent holds a connection now
    (inherited,) = store._file._free
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(store, inherited, queue))
    child.start()
    assert queue.get(timeout=30) == (SUCCESS, True, True)
    child.join(30)
    assert child.exitcode == 0
    assert store._file._free == [inherited]  # the parent's own, and it still works
    assert store.get("t1").state == SUCCESS
    store.dispose()
    assert store._file._free == []


def test_a_failed_write_leaves_nothing_and_its_connection_ready(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    with pytest.raises(RuntimeError, match="midway"):
        with store._writing() as cur:
            write(cur, False, [row("t1", SUCCESS)], [])
            raise RuntimeError("the caller fails midway")
    assert store.get("t1") is None
    (conn,) = store._file._free
    assert not conn.in_transaction
    store.write([row("t2", SUCCESS)])
    assert store.get("t2").state == SUCCESS
    store.dispose()


def test_a_locked_store_fails_once_in_the_words_of_any_opener(tmp_path, monkeypatch):
    monkeypatch.setitem(SQLITE_CONNECT, "timeout", 0.1)
    path = tmp_path / "s.sqlite"
    path.touch()  # an empty file: no WAL yet, so a writer's lock keeps readers out
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"s.sqlite: cannot open as a localabort store \(database is locked\)$"):
            Store(str(path))
    finally:
        holder.close()
    Store(str(path)).dispose()  # made, once the lock is gone


def test_the_switch_to_wal_waits_one_busy_timeout_in_all_and_leaves_the_connection_s_own(tmp_path, monkeypatch):
    import time

    import localabort._sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT", 0.3)
    path = tmp_path / "s.sqlite"
    conn = sqlite3.connect(path, timeout=3.0, isolation_level=None)  # each attempt alone would wait 3 s
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            sqlite_store._into_wal(conn)
        assert time.monotonic() - start < 2.0
    finally:
        holder.close()
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (3000,)  # its own, back
    sqlite_store._into_wal(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_a_plain_sqlite_url_is_a_file_and_one_with_options_goes_through_sqlalchemy(tmp_path):
    path = str(tmp_path / "s.sqlite")
    plain = Store("sqlite:///" + path)
    assert plain._file is not None and plain.path == path
    optioned = Store(f"sqlite:///{path}?timeout=5")
    assert optioned._file is None and optioned.path == path
    assert optioned.get("x") is None and plain.get("x") is None
    plain.dispose()
    optioned.dispose()
