"""The store: one contract suite on a real SQLite file and on a real PostgreSQL server, then SQLite's own cases.

The PostgreSQL runs need ``LOCALABORT_TEST_POSTGRES_URL`` (``.ci/postgres.sh``
starts a throwaway server and prints one); without it they are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest

from localabort import (
    ABORTED,
    FAILURE,
    PENDING,
    STARTED,
    SUCCESS,
    AbortableAsyncResult,
    Executor,
    StoreError,
    TaskAborted,
    UnknownTask,
    WorkerLost,
)  # fmt: skip
from localabort._listing import JSON_FIELDS
from localabort._outcome import load_outcome
from localabort._procs import REMOTE_SILENT
from localabort._schema import executors, task_row
from localabort._store import Store

from .conftest import wait_for


def row(task_id="t1", state=PENDING, **extra):
    values = dict(name="tests.Job", executor_id="e1", state=state, submitted_at=1.0)
    values.update(extra)
    return task_row(task_id, **values)


@pytest.fixture
def sqlite_store(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    yield store
    store.dispose()


def sql(path, statement):
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(statement).fetchall()


def test_new_store_is_owner_only_and_in_wal_mode(sqlite_store):
    store = sqlite_store
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    store.write([row()])
    assert stat.S_IMODE(os.stat(store.path + "-wal").st_mode) == 0o600
    assert sql(store.path, "PRAGMA journal_mode") == [("wal",)]


def test_missing_folder(tmp_path):
    path = tmp_path / "no" / "such" / "s.sqlite"
    with pytest.raises(StoreError, match=rf"^{path}: folder {path.parent} does not exist; create it first$"):
        Store(str(path))


def test_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    with pytest.raises(StoreError, match=rf"^{path}: cannot open as a localabort store \(file is not a database\)"):
        Store(str(path))


# -- only an Executor creates a store; every other opener needs one ---------------------


def test_a_missing_store_is_an_error_unless_the_opener_creates_it(tmp_path):
    path = tmp_path / "typo.sqlite"
    with pytest.raises(StoreError, match=rf"^{path}: no such store \(check the path; an Executor creates one\)$"):
        Store.open(str(path))
    assert not path.exists()
    assert Store.open(str(path), create=True).get("x") is None and path.exists()


@pytest.mark.parametrize("kind", ["zero-byte file", "foreign database"])
def test_a_file_that_is_not_a_localabort_store_is_left_as_it_was(tmp_path, kind):
    path = tmp_path / "other_app.db"
    if kind == "zero-byte file":
        path.touch()
    else:
        sql(str(path), "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    before = path.read_bytes()
    what = "is an empty file" if kind == "zero-byte file" else "is a database, but not a localabort store"
    with pytest.raises(StoreError, match=rf"^{path}: {what} \(an Executor creates a store; check the path\)$"):
        Store.open(str(path))
    with pytest.raises(StoreError):
        AbortableAsyncResult("t1", store=str(path))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["other_app.db"]


def test_an_executor_refuses_a_database_whose_localabort_tables_are_not_a_stores_and_leaves_it_byte_for_byte(
    tmp_path,
):
    path = tmp_path / "other.db"
    sql(str(path), "CREATE TABLE localabort_tasks (id TEXT PRIMARY KEY, owner TEXT, payload BLOB)")
    sql(str(path), "INSERT INTO localabort_tasks VALUES ('a', 'someone', x'00')")
    before = path.read_bytes()
    what = r"is a database, but not a localabort store \(an Executor creates a store; check the path\)$"
    with pytest.raises(StoreError, match=rf"^{path}: {what}"):
        Executor(max_workers=1, store=str(path))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["other.db"]  # no WAL, no new table
    status = subprocess.run([sys.executable, "-m", "localabort", "status", str(path)], capture_output=True, text=True)
    assert status.returncode == 2 and "is a database, but not a localabort store" in status.stderr


def test_an_executor_shares_an_applications_database_and_leaves_its_tables_be(tmp_path):
    """As Celery's database backend does: localabort's three tables beside the application's."""
    path = tmp_path / "app.db"
    sql(str(path), "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    sql(str(path), "INSERT INTO users (name) VALUES ('ada')")
    with Executor(max_workers=1, store=str(path)) as ex:
        assert ex.submit(divmod, 7, 2).result(timeout=60) == (3, 1)
    assert sql(str(path), "SELECT name FROM users") == [("ada",)]
    tables = {name for (name,) in sql(str(path), "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"users", "localabort_tasks", "localabort_executors", "localabort_meta", "localabort_logs"}


def test_an_executor_in_the_same_process_notices_its_store_file_was_deleted(tmp_path):
    path = str(tmp_path / "s.sqlite")
    with Executor(max_workers=1, store=path) as ex:
        assert ex.submit(abs, -1).result(timeout=60) == 1
    for name in os.listdir(tmp_path):
        os.unlink(tmp_path / name)
    with Executor(max_workers=1, store=path) as ex:  # a new store, not the deleted file's cached handle
        future = ex.submit(abs, -2)
        assert future.result(timeout=60) == 2
    reader = Store(path, create=False)
    assert reader.get(future.id).state == SUCCESS and os.path.getsize(path) > 0
    reader.dispose()


def test_an_executor_in_the_same_process_notices_its_stores_schema_changed(tmp_path):
    path = str(tmp_path / "s.sqlite")
    Executor(max_workers=1, store=path).shutdown()
    sql(path, "UPDATE localabort_meta SET value = '99' WHERE name = 'schema'")  # a newer localabort's, since
    with pytest.raises(StoreError, match=r"written by a newer localabort \(schema 99"):
        Executor(max_workers=1, store=path)


def test_every_way_of_naming_a_store_file_names_the_same_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    store = Store.open("rel.sqlite", create=True)
    for spec in (
        "sqlite:///rel.sqlite",
        f"sqlite:///{tmp_path}/rel.sqlite",
        "~/rel.sqlite",
        str(tmp_path / "rel.sqlite"),
    ):
        other = Store(spec, create=False)
        assert other.path == store.path == str(tmp_path / "rel.sqlite"), spec
        other.dispose()


def test_store_specs_that_cannot_work_fail_in_one_line(tmp_path):
    with pytest.raises(
        StoreError, match=rf"^{tmp_path}: is a folder; name a file in it, such as {tmp_path}/store.sqlite$"
    ):
        Store.open(str(tmp_path))
    with pytest.raises(
        StoreError, match=r"^mysql://u@h/db: a store is an SQLite file or a PostgreSQL database, not mysql$"
    ):
        Store.open("mysql://u@h/db")


def _create(path, barrier):
    barrier.wait()
    Store(path).dispose()


@pytest.mark.parametrize("method, rounds", [("spawn", 1), ("fork", 20)])
def test_two_processes_may_create_one_store_at_the_same_moment(tmp_path, method, rounds):
    """Four at once, each asking for WAL mode: SQLite refuses one of two at once (no busy wait) when both hold
    a read lock; 4 rounds in 60 failed so, "database is locked", before that refusal was asked again."""
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    for round_ in range(rounds):
        path = str(tmp_path / f"new-{round_}.sqlite")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_create, args=(path, barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0], f"round {round_}"
        for proc in procs:
            proc.close()
        store = Store.open(path)
        assert store.get("x") is None
        store.dispose()


def test_read_only_store(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = tmp_path / "ro.sqlite"
    Store(str(path)).dispose()
    path.chmod(0o400)
    with pytest.raises(StoreError, match=str(path)):
        Store(str(path)).write([row()])


def test_store_from_a_newer_localabort(sqlite_store):
    store = sqlite_store
    sql(store.path, "UPDATE localabort_meta SET value = '99' WHERE name = 'schema'")
    with pytest.raises(StoreError, match=r"written by a newer localabort \(schema 99.*upgrade localabort"):
        Store(store.path)


def test_reopen_keeps_tasks(store):
    store.write([row("a", SUCCESS)])
    again = Store(store.url)
    assert again.get("a").state == SUCCESS
    again.dispose()


def test_the_arguments_written_at_submit_outlive_later_writes(store):
    """Only the submitter knows a call's arguments: a write that gives none (a claim, an outcome) keeps them."""
    store.write([row("t1", args_repr="1, n=2")])
    store.write([row("t1", STARTED, started_at=2.0)])
    store.write([row("t1", SUCCESS, finished_at=3.0)])
    record = store.get("t1")
    assert (record.state, record.args_repr) == (SUCCESS, "1, n=2")


def test_one_write_of_many_rows_keeps_their_order_even_for_one_id_twice(store):
    """On SQLite a write sends a few dozen rows a statement: two rows of one id in one statement apply in order."""
    rows = [row(f"t{i}", args_repr=str(i)) for i in range(70)]
    rows[40:40] = [row("t3", STARTED, started_at=2.0), row("t3", SUCCESS, started_at=2.0, finished_at=3.0)]
    rows.append(row("t3", STARTED))  # a late write: the final state stays
    store.write(rows)
    assert {record.id: record.args_repr for record in store.tasks(limit=100)} == {f"t{i}": str(i) for i in range(70)}
    record = store.get("t3")
    assert (record.state, record.started_at, record.finished_at) == (SUCCESS, 2.0, 3.0)


def test_open_is_one_handle_per_store(tmp_path):
    path = str(tmp_path / "one.sqlite")
    assert Store.open(path, create=True) is Store.open(os.path.relpath(path)) is Store.open("sqlite:///" + path)
    assert Store.open(path) is Store.open(path)


def test_final_state_is_never_overwritten(store):
    store.write([row(state=STARTED)])
    store.write([row(state=ABORTED, finished_at=2.0)])
    store.write([row(state=STARTED, progress_done=5.0)])  # a late write, as Celery's abortable suffers
    store.write([row(state=SUCCESS)])
    record = store.get("t1")
    assert record.state == ABORTED and record.progress is None


def test_abort_request_survives_state_and_progress_writes(store):
    store.write([row(state=STARTED)])
    assert store.request_abort("t1") == STARTED
    store.write([row(state=STARTED, progress_done=3.0, progress_total=10.0)])
    store.write([row(state=SUCCESS, finished_at=2.0, progress_done=3.0, progress_total=10.0)])
    record = store.get("t1")
    assert record.abort_requested and record.state == SUCCESS and record.progress == (3, 10)


def test_request_abort(store):
    with pytest.raises(UnknownTask, match=r"^no task unknown in "):
        store.request_abort("unknown")
    assert store.tasks() == [] and store.counts() == {}  # the standing abort it made while it asked is gone
    store.write([row("done", SUCCESS)])
    assert store.request_abort("done") is None
    store.write([row("live", STARTED)])
    assert store.request_abort("live") == STARTED  # the state the request met
    assert store.request_abort("live") == STARTED  # already recorded
    assert store.is_abort_requested("live") and not store.is_abort_requested("done")


def test_abort_rows_for_tasks_not_yet_written(store):
    store.write([], aborts=[dict(row("early"), abort_requested_at=5.0)])
    record = store.get("early")
    assert record.state == PENDING and record.abort_requested
    store.write([row("early", STARTED)], aborts=[dict(row("early"), abort_requested_at=9.0)])
    assert store.get("early").state == STARTED and store.is_abort_requested("early")


# -- an id handed out before its row is written is never unknown ----------------------


def test_an_abort_that_comes_before_the_row_is_kept_and_wins(store):
    """An executor handed out "early" but has not written its row: the abort waits for it, and the row keeps it."""
    store.register_executor("e1")
    with store._begin() as conn:  # it has written nothing since long ago
        conn.execute(executors.update().where(executors.c.id == "e1").values(flushed_at=time.time() - 1))
    answer = []
    asker = threading.Thread(target=lambda: answer.append(store.request_abort("early")))
    asker.start()
    wait_for(lambda: sql_rows(store, "early"), what="the standing abort")
    assert store.get("early") is None and not store.tasks()  # readers never see a standing abort
    # The executor's write lands on it: a claim, whose check finds the abort.
    written = row("early")
    assert store.sync("e1", [written], [], claims=[("early", "tests.Job", None)], flushed_at=time.time()) == (
        ["early"],
        {},
    )
    asker.join(10)
    assert answer == [PENDING]  # it never runs
    record = store.get("early")
    assert record.state == "RECEIVED" and record.abort_requested and record.name == "tests.Job"  # claimed, aborted


def test_an_unknown_id_waits_only_for_executors_that_may_hold_it(store):
    store.register_executor("e1")
    with store._begin() as conn:
        conn.execute(executors.update().where(executors.c.id == "e1").values(flushed_at=time.time() - 1))
    raised = []

    def ask():
        with pytest.raises(UnknownTask):
            store.request_abort("typo")
        raised.append(True)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_for(lambda: sql_rows(store, "typo"), what="the standing abort")
    assert asker.is_alive()  # e1 may still write it
    store.sync("e1", [], [], claims=[], flushed_at=time.time())  # e1 is written up: no such task
    asker.join(10)
    assert raised and not sql_rows(store, "typo")


def test_sync_reads_aborts_after_its_writes(store):
    store.write([row("a"), row("b"), row("c", STARTED)])
    store.request_abort("a")
    store.request_abort("c")
    claims = [("a", "tests.Job", None), ("b", "tests.Job", None)]
    assert store.sync("e1", [row("a"), row("b")], [], claims=claims, flushed_at=1.0) == (["a"], {})
    assert store.get("a").state == store.get("b").state == "RECEIVED"  # claimed, and a's abort is in the answer
    assert sorted(store.aborts_requested("e1")) == ["a", "c"]


def sql_rows(store, task_id):
    import sqlalchemy as sa

    from localabort._schema import tasks

    with store._connect() as conn:
        return conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_id)).all()


# -- the schema version, and upgrading an older store -------------------------------


def test_partial_indexes_are_made_with_their_conditions(store):
    """Their conditions are given per database at creation (so a SQLite store never loads PostgreSQL's dialect)."""
    import sqlalchemy as sa

    from localabort._schema import PARTIAL

    if store.engine.dialect.name == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
    else:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'localabort_tasks'"
    with store._connect() as conn:
        made = {name: ddl for name, ddl in conn.execute(sa.text(query)) if name in PARTIAL}
    assert set(made) == set(PARTIAL)
    for name, ddl in made.items():
        own = ("ix_localabort_tasks_running", "ix_localabort_tasks_finished")  # not by the unfinished states
        assert " WHERE " in ddl and ("RECEIVED" in ddl or name in own), (name, ddl)
    assert "abort_requested_at IS NOT NULL" in made["ix_localabort_tasks_aborting"]
    assert "STARTED" in made["ix_localabort_tasks_running"]
    assert "finished_at IS NOT NULL" in made["ix_localabort_tasks_finished"]


SCHEMA_1 = [
    "CREATE TABLE localabort_tasks (id VARCHAR(64) NOT NULL, executor_id VARCHAR(64), name VARCHAR(255) NOT NULL, "
    "key VARCHAR(255), state VARCHAR(16) NOT NULL, submitted_at FLOAT, started_at FLOAT, finished_at FLOAT, "
    "progress_done FLOAT, progress_total FLOAT, abort_requested_at FLOAT, result BLOB, traceback TEXT, "
    "PRIMARY KEY (id))",
    "CREATE INDEX ix_localabort_tasks_name_key ON localabort_tasks (name, key)",
    "CREATE INDEX ix_localabort_tasks_submitted_at ON localabort_tasks (submitted_at)",
    "CREATE INDEX ix_localabort_tasks_unfinished ON localabort_tasks (executor_id) "
    "WHERE state IN ('PENDING', 'STARTED')",
    "CREATE TABLE localabort_executors (id VARCHAR(64) NOT NULL, hostname VARCHAR(255), pid INTEGER, "
    "process_start VARCHAR(32), started_at FLOAT, closed_at FLOAT, PRIMARY KEY (id))",
    "CREATE TABLE localabort_meta (name VARCHAR(64) NOT NULL, value VARCHAR(255), PRIMARY KEY (name))",
    "INSERT INTO localabort_meta VALUES ('schema', '1')",
    "INSERT INTO localabort_tasks (id, executor_id, name, key, state, submitted_at) "
    "VALUES ('old', 'e0', 'tests.Job', 'k', 'SUCCESS', 1.0)",
]


def test_an_older_store_is_upgraded_by_an_executor_only(tmp_path):
    path = str(tmp_path / "v1.sqlite")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for statement in SCHEMA_1:
            conn.execute(statement)
    with pytest.raises(StoreError, match=r"older localabort \(schema 1, this one reads 7\); open it once with an Ex"):
        Store(path, create=False)
    assert sql(path, "SELECT value FROM localabort_meta") == [("1",)]  # a reader changed nothing
    store = Store(path, create=True)
    assert sql(path, "SELECT value FROM localabort_meta") == [("7",)]
    assert store.get("old").state == SUCCESS and store.get("old").error is None  # the tasks are kept
    indexes = dict(sql(path, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    assert "RECEIVED" in indexes["ix_localabort_tasks_unfinished"]
    assert "ux_localabort_tasks_held_key" in indexes
    assert "abort_requested_at IS NOT NULL" in indexes["ix_localabort_tasks_aborting"]
    assert "state = 'STARTED'" in indexes["ix_localabort_tasks_running"]
    store.register_executor("e1")  # the new column is there
    store.write([row("new", SUCCESS, worker_pid=7, cpu_seconds=0.5, peak_rss=2**20, log=("hi\n", 0))])
    assert store.get("new").usage == {"worker_pid": 7, "cpu_seconds": 0.5, "peak_rss": 2**20}
    assert store.log("new") == ("hi\n", 0) and store.log("old") is None
    store.dispose()
    Store(path, create=False).dispose()  # and now any reader opens it


def test_an_older_schema_is_upgraded_on_either_database(store):
    """Schema 1, as localabort 0.1 made it, made from today's by undoing what schemas 2 to 7 added."""
    import sqlalchemy as sa

    store.write([row("old", SUCCESS, key="k", finished_at=1.0)])
    with store._begin() as conn:
        for name in (
            "ix_localabort_tasks_unfinished",
            "ux_localabort_tasks_held_key",
            "ix_localabort_tasks_aborting",
            "ix_localabort_tasks_running",
        ):
            conn.execute(sa.text(f"DROP INDEX {name}"))
        for column in ("flushed_at", "pid_namespace"):
            conn.execute(sa.text(f"ALTER TABLE localabort_executors DROP COLUMN {column}"))
        conn.execute(sa.text("DROP TABLE localabort_logs"))
        for column in (
            "abort_by", "terminate_at", "error", "retries", "eta", "args_repr", "worker_pid", "cpu_seconds", "peak_rss",
        ):  # fmt: skip
            conn.execute(sa.text(f"ALTER TABLE localabort_tasks DROP COLUMN {column}"))
        conn.execute(sa.text("CREATE INDEX ix_localabort_tasks_unfinished ON localabort_tasks (executor_id) "
                             "WHERE state IN ('PENDING', 'STARTED')"))  # fmt: skip
        conn.execute(sa.text("UPDATE localabort_meta SET value = '1' WHERE name = 'schema'"))
    store.dispose()
    with pytest.raises(StoreError, match=r"older localabort \(schema 1"):
        Store(store.url, create=False)
    upgraded = Store(store.url, create=True)
    assert upgraded._schema_version(create=False) == "7" and upgraded.get("old").state == SUCCESS
    assert upgraded.aborts_requested("e0") == {}  # its index is back (SQLite names it: INDEXED BY)
    upgraded.register_executor("e1")  # flushed_at and pid_namespace are back
    assert upgraded.sync("e1", [row("new", key="k")], [], claims=[("new", "tests.Job", "k")], flushed_at=1.0) == (
        [],
        {},
    )
    upgraded.write([row("new", SUCCESS, worker_pid=7, cpu_seconds=0.5, peak_rss=2**40, log=("hi\n", 3))])
    assert upgraded.get("new").usage == {"worker_pid": 7, "cpu_seconds": 0.5, "peak_rss": 2**40}  # a BIGINT
    assert upgraded.log("new") == ("hi\n", 3)
    upgraded.dispose()


# -- starting a task (what a Celery worker does before it runs one) ----------------


def started(task_id="t1", **extra):
    return row(task_id, STARTED, executor_id="celery", started_at=2.0, submitted_at=None, **extra)


def test_start_moves_a_pending_task_to_started_once_and_fills_in_its_row(store):
    store.write([row("t1", executor_id="celery", key="k1", submitted_at=1.5)])
    begun = started()
    assert store.start(begun) == STARTED
    assert (begun["submitted_at"], begun["key"]) == (1.5, "k1")
    record = store.get("t1")
    assert (record.state, record.started_at) == (STARTED, 2.0)
    assert store.start(started()) == STARTED  # delivered again (acks_late), not aborted: it may run again


def test_start_of_an_aborted_task_ends_it_unrun(store):
    store.write([row("t1", executor_id="celery")])
    assert store.request_abort("t1")
    assert store.start(started()) == ABORTED
    record = store.get("t1")
    assert record.state == ABORTED
    with pytest.raises(TaskAborted, match="t1 aborted before it started"):
        raise load_outcome(record.state, record.result, record.traceback)[1]
    assert store.start(started()) == ABORTED  # a later delivery finds it finished


def test_start_of_a_finished_task_says_its_state(store):
    store.write([row("t1", SUCCESS, executor_id="celery", finished_at=3.0)])
    assert store.start(started()) == SUCCESS and store.get("t1").state == SUCCESS


def test_start_of_an_unknown_task_records_it(store):
    assert store.start(started("sent-elsewhere")) == STARTED
    assert store.get("sent-elsewhere").state == STARTED


def test_abort_unstarted_ends_only_a_pending_task_of_its_owner(store):
    store.write([row("t1", executor_id="celery"), row("t2", executor_id="e1"), row("t3", executor_id="celery")])
    assert store.start(started("t3")) == STARTED
    assert store.abort_unstarted("t1", "celery") is True
    assert store.abort_unstarted("t1", "celery") is False  # ended already
    assert store.abort_unstarted("t2", "celery") is False  # an executor's task: its executor ends it
    assert store.abort_unstarted("t3", "celery") is False  # started: it runs, and is asked instead
    assert [store.get(t).state for t in ("t1", "t2", "t3")] == [ABORTED, PENDING, STARTED]
    assert store.start(started("t1")) == ABORTED  # the start that comes after loses


def test_aborts_requested_lists_unfinished_tasks_of_one_executor(store):
    store.write([row("a", STARTED), row("b", PENDING), row("c", SUCCESS), row("d", STARTED, executor_id="e2")])
    for task_id in "abcd":
        store.request_abort(task_id)
    assert sorted(store.aborts_requested("e1")) == ["a", "b"]


def test_find_success(store):
    store.write([row("old", SUCCESS, key="k", finished_at=1.0, result=b"x"), row("f", "FAILURE", key="k2")])
    assert store.find_key("tests.Job", "k").id == "old"
    assert store.find_key("tests.Job", "k2") is None
    assert store.find_key("other.Job", "k") is None


def test_progress_keeps_fractions(store):
    store.write([row(progress_done=0.5, progress_total=None)])
    assert store.get("t1").progress == (0.5, None)


def test_listing_filters_and_counts(store):
    store.write([row("a", SUCCESS, submitted_at=1.0), row("b", STARTED, submitted_at=2.0, name="tests.Other"),
                 row("c", PENDING, submitted_at=3.0)])  # fmt: skip
    assert [r.id for r in store.tasks()] == ["c", "b", "a"]  # newest first
    assert [r.id for r in store.tasks(states=[PENDING, STARTED])] == ["c", "b"]
    assert [r.id for r in store.tasks(name="Other")] == ["b"]
    assert [r.id for r in store.tasks(["a", "c", "zz"], limit=1)] == ["c"]
    assert store.counts() == {SUCCESS: 1, STARTED: 1, PENDING: 1}
    assert store.counts(finished=False) == {STARTED: 1, PENDING: 1, "finished": 1}  # no scan of finished rows


def test_listing_more_ids_than_one_statement_may_bind(store):
    ids = [f"t{i:05}" for i in range(40_000)]  # SQLite binds at most 32,766 parameters
    store.write([row(task_id, SUCCESS, submitted_at=float(i)) for i, task_id in enumerate(ids)])
    found = store.tasks([*ids, "missing"])
    assert len(found) == 40_000 and found[0].id == "t39999" and found[-1].id == "t00000"
    assert [r.id for r in store.tasks(ids, limit=2)] == ["t39999", "t39998"]


def test_json_listing_says_what_the_records_do(store):
    hostile = "tests.\u202eevil\x1b]0;x\x07"
    store.write([row("a", SUCCESS, submitted_at=1.5, finished_at=2.25, error=None),
                 row("b", STARTED, submitted_at=2.0, progress_done=3.0, progress_total=10.0, key="k"),
                 row("c", PENDING, submitted_at=3.0, progress_done=0.5, name=hostile)])  # fmt: skip
    store.request_abort("b", by="me")
    listed = store.tasks_json()
    assert all(text.isascii() for text in listed)  # no raw bidi or control character for a terminal
    objects = [json.loads(text) for text in listed]
    assert [o["id"] for o in objects] == ["c", "b", "a"] and list(objects[0]) == list(JSON_FIELDS)
    c, b, a = objects
    assert c["name"] == hostile and c["progress"] == [0.5, None]
    assert b["progress"] == [3, 10] and isinstance(b["progress"][0], int)  # as TaskRecord.progress has it
    assert (b["abort_requested"], b["abort_by"], b["key"], b["state"]) == (True, "me", "k", STARTED)
    assert (a["abort_requested"], a["progress"], a["finished_at"], a["error"]) == (False, None, 2.25, None)
    assert 0 < a["age_seconds"] - (time.time() - 1.5) + 5 < 10
    assert [json.loads(t)["id"] for t in store.tasks_json(["a", "b", "zz"], states=[SUCCESS])] == ["a"]
    assert [json.loads(t)["id"] for t in store.tasks_json(name="evil", limit=5)] == ["c"]


def test_request_abort_all_asks_each_unfinished_task_once(store):
    store.write([row("a", STARTED), row("b", PENDING), row("c", SUCCESS)])
    assert sorted(store.request_abort_all()) == ["a", "b"]
    assert store.request_abort_all() == []
    assert store.get("a").abort_requested and not store.get("c").abort_requested


def test_forget_deletes_only_old_finished_tasks(store):
    store.write([row("old", SUCCESS, finished_at=1.0), row("live", STARTED), row("new", SUCCESS, finished_at=9e12)])
    assert store.forget(older_than=60) == 1
    assert store.get("old") is None and store.get("live") and store.get("new")


def test_a_dead_executors_tasks_fail_on_the_next_open(store):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.write([row("orphan", STARTED, executor_id="dead-ex"), row("mine", STARTED, executor_id="live-ex")])
    store.register_executor("live-ex")
    with store._begin() as conn:  # an executor whose process has exited
        conn.execute(executors.insert().values(id="dead-ex", hostname=socket.gethostname(), pid=int(gone.stdout),
                                               process_start="1", started_at=1.0))  # fmt: skip
    assert store.recover_dead_executors() == ["dead-ex"]
    orphan = store.get("orphan")
    assert orphan.state == FAILURE and store.get("mine").state == STARTED
    with pytest.raises(WorkerLost, match=r"executor dead-ex .* died before this task finished"):
        raise load_outcome(orphan.state, orphan.result, orphan.traceback)[1]


def test_a_dead_executor_is_recovered_at_once_only_by_a_reader_in_its_pid_namespace(store):
    """Where the reader shares the executor's PID namespace, a pid that does not run is proof: no silence needed."""
    from localabort._procs import pid_namespace

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.write([row("here", STARTED, executor_id="dead-here"), row("there", STARTED, executor_id="dead-there")])
    now = time.time()
    with store._begin() as conn:  # both wrote a moment ago; the second's pid is read in another container
        for executor_id, namespace in (("dead-here", pid_namespace()), ("dead-there", "another-boot/pid:[1]")):
            values = dict(hostname=socket.gethostname(), pid=int(gone.stdout), started_at=now, flushed_at=now)
            conn.execute(executors.insert().values(id=executor_id, pid_namespace=namespace, **values))
    assert pid_namespace() is not None  # Linux: /proc says
    assert store.recover_dead_executors() == ["dead-here"]
    assert store.get("here").state == FAILURE and store.get("there").state == STARTED


def test_an_executor_on_another_host_is_dead_once_silent_for_remote_silent(store):
    now = time.time()
    store.write([row("lost", STARTED, executor_id="far-silent"), row("kept", STARTED, executor_id="far-live")])
    with store._begin() as conn:  # pids that mean nothing here: only their silence can say
        for executor_id, silent in (("far-silent", REMOTE_SILENT + 1), ("far-live", REMOTE_SILENT - 20)):
            conn.execute(executors.insert().values(id=executor_id, hostname="another-host", pid=os.getpid(),
                                                   started_at=1.0, flushed_at=now - silent))  # fmt: skip
    assert store.recover_dead_executors() == ["far-silent"]
    assert store.get("lost").state == FAILURE and store.get("kept").state == STARTED
    assert "(pid" in store.get("lost").error and "on another-host) died" in store.get("lost").error


def test_store_survives_pickling_as_its_url(store):
    import pickle

    assert pickle.loads(pickle.dumps(store)).url == store.url


# -- a key is held by one task at a time --------------------------------------------


def claim(store, *keyed):
    return store.sync("e1", [], [], claims=[(task_id, "tests.Job", key) for task_id, key in keyed], flushed_at=1.0)


def test_a_key_is_held_by_one_task_at_a_time(store):
    store.write([row("a", key="k"), row("b", key="k"), row("c", key="other"), row("d")])
    assert claim(store, ("a", "k"), ("c", "other"), ("d", None)) == ([], {})
    assert claim(store, ("b", "k")) == ([], {"b": "a"})  # a holds k: b must not run
    assert [store.get(t).state for t in "abcd"] == ["RECEIVED", PENDING, "RECEIVED", "RECEIVED"]
    with pytest.raises(StoreError):  # the index holds even against a write that does not ask
        store.write([row("b", STARTED, key="k")])
    store.write([row("a", SUCCESS, key="k", finished_at=2.0)])
    assert claim(store, ("b", "k")) == ([], {})  # a has finished: k is free
    assert store.find_key("tests.Job", "k").id == "b"  # unfinished first


def test_find_key_prefers_the_task_in_flight(store):
    store.write([row("old", SUCCESS, key="k", finished_at=1.0), row("live", STARTED, key="k", submitted_at=5.0)])
    assert store.find_key("tests.Job", "k").id == "live"


# -- hostile store files -------------------------------------------------------------


def test_an_executor_never_creates_or_writes_a_store_through_a_symbolic_link(tmp_path):
    dangling = tmp_path / "store.sqlite"
    dangling.symlink_to(tmp_path / "elsewhere.sqlite")
    with pytest.raises(StoreError, match=r"is a symbolic link \(to .*elsewhere.sqlite\); give an Executor"):
        Executor(max_workers=1, store=str(dangling))
    assert not (tmp_path / "elsewhere.sqlite").exists()
    victim = tmp_path / "notes.txt"
    victim.write_text("mine")
    (tmp_path / "other.sqlite").symlink_to(victim)
    with pytest.raises(StoreError, match="is a symbolic link"):
        Executor(max_workers=1, store=str(tmp_path / "other.sqlite"))
    assert victim.read_text() == "mine"


def test_a_store_others_may_write_is_made_theirs_no_longer(tmp_path):
    path = tmp_path / "shared.sqlite"
    Executor(max_workers=1, store=str(path)).shutdown()
    for name in (path, tmp_path / "shared.sqlite-wal"):
        if name.exists():
            os.chmod(name, 0o666)
    with pytest.warns(UserWarning, match=r"was writable by others \(mode 0666\); made it 0644"):
        Executor(max_workers=1, store=str(path)).shutdown()
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            assert not os.stat(str(path) + suffix).st_mode & 0o022
