"""The store's schema: its tables and indexes, and the migrations of an older one.

One row per task in ``localabort_tasks`` (read as ``_record.TaskRecord``). ``abort_requested_at`` is the
abort request, a fact of its own that state writes never touch;
``STATE_COLUMNS`` are what those writes set. A partial index covers only
unfinished tasks, so recovery stays cheap however large the store grows;
another only unfinished tasks with an abort asked, so the executors' abort
poll reads those alone, however many tasks are queued; another only
running tasks, so the dashboard draws their bars without reading the
queue; a unique one lets a key be held by one task at a time.
An abort asked for an id whose row is not written yet is a row of its own
(a *standing abort*, with an empty name) until the executor's row lands on it.

``localabort_meta`` records the schema version. ``MIGRATIONS`` upgrade an
older store, each step in the one transaction that also records the new
version (``Store`` runs them, for an ``Executor`` only). The tables' names
and the partial indexes' conditions are text, ``_sql``'s, which the
recorder uses without SQLAlchemy.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._outcome import describe, dump
from ._sql import ABORTING, EXECUTORS, HELD_KEY, LOGS, META, RUNNING, TASKS, UNFINISHED
from ._states import STATE_COLUMNS, task_row

__all__ = [
    "MIGRATIONS",
    "PARTIAL",
    "STATE_COLUMNS",
    "conditions_for",
    "end_tasks",
    "executors",
    "logs",
    "meta",
    "metadata",
    "task_row",
    "tasks",
]

metadata = sa.MetaData()

tasks = sa.Table(
    TASKS,
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("executor_id", sa.String(64)),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("submitted_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("progress_done", sa.Float),
    sa.Column("progress_total", sa.Float),
    sa.Column("abort_requested_at", sa.Float),
    # Who asked for the abort, in words ("localabort abort (pid 12 on host)", "Ctrl-C", "soft_time_limit").
    sa.Column("abort_by", sa.String(255)),
    # When the worker of a task still running is to be killed: abort(terminate_after=...).
    sa.Column("terminate_at", sa.Float),
    sa.Column("result", sa.LargeBinary),
    sa.Column("traceback", sa.Text),
    # "Type: message" of the outcome's exception (a task waiting to retry: of the last attempt's), readable
    # without unpickling anything.
    sa.Column("error", sa.Text),
    # Attempts retried so far, and when the next one is due (a task in RETRY).
    sa.Column("retries", sa.Integer),
    sa.Column("eta", sa.Float),
    # The call's arguments as text (``_text.call_repr``), written at submit: what a reader may show without
    # unpickling anything (the dashboard's task detail).
    sa.Column("args_repr", sa.Text),
    # What the task used, written as it ends: the process that ran it, its CPU seconds (with the processes
    # it started and waited for), and its peak resident memory in bytes (``_capture.Usage``).
    sa.Column("worker_pid", sa.Integer),
    sa.Column("cpu_seconds", sa.Float),
    sa.Column("peak_rss", sa.BigInteger),
    sa.Index("ix_localabort_tasks_name_key", "name", "key"),
    sa.Index("ix_localabort_tasks_submitted_at", "submitted_at"),
    # Partial indexes, their conditions in ``PARTIAL`` (given per dialect, at creation: ``conditions_for``).
    # Only unfinished tasks: it stays small however large the store grows.
    sa.Index("ix_localabort_tasks_unfinished", "executor_id"),
    # Only unfinished tasks with an abort asked: what the executors' abort poll reads, every 20 ms.
    sa.Index("ix_localabort_tasks_aborting", "executor_id"),
    # Only keys held: one task per name and key.
    sa.Index("ux_localabort_tasks_held_key", "name", "key", unique=True),
    # Only running tasks, by start: the dashboard's bars, however many tasks are queued.
    sa.Index("ix_localabort_tasks_running", "started_at"),
    # Only finished tasks, by batch and end: the dashboard's task stream and rate, its last minutes however
    # large the store. Partial: a row written before its end (PENDING, RECEIVED, STARTED) costs it nothing.
    sa.Index("ix_localabort_tasks_finished", "executor_id", "finished_at"),
)

#: The condition of each partial index of ``tasks``.
PARTIAL = {
    "ix_localabort_tasks_unfinished": UNFINISHED,
    "ix_localabort_tasks_aborting": ABORTING,
    "ux_localabort_tasks_held_key": HELD_KEY,
    "ix_localabort_tasks_running": RUNNING,
    "ix_localabort_tasks_finished": "finished_at IS NOT NULL",
}


def conditions_for(dialect: str) -> None:
    """Give the partial indexes their conditions, as options of ``dialect`` (the store's), before any DDL.

    Given in the table's definition, a PostgreSQL option would import
    SQLAlchemy's PostgreSQL dialect (and asyncio with it) in every process
    that imports this module: a tenth of a second for each ``localabort``
    command on a SQLite store.
    """
    for index in tasks.indexes:
        if index.name in PARTIAL and index.dialect_options[dialect]["where"] is None:
            index.dialect_options[dialect]["where"] = sa.text(PARTIAL[index.name])


executors = sa.Table(
    EXECUTORS,
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hostname", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("process_start", sa.String(32)),  # tells a live pid from a reused one
    sa.Column("pid_namespace", sa.String(96)),  # where its pid means what it says (``_procs.pid_namespace``)
    sa.Column("started_at", sa.Float),
    sa.Column("closed_at", sa.Float),
    # Every task this executor handed out before this time has its row (see Store.request_abort).
    sa.Column("flushed_at", sa.Float),
)


#: Each task's log: the last bytes of what it printed and logged, and how many bytes came before them.
#: A table of its own, so that reading tasks never reads their logs.
logs = sa.Table(
    LOGS,
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("dropped", sa.BigInteger, nullable=False),
)


def end_tasks(*where: Any, state: str, exc: BaseException, at: Optional[float] = None) -> sa.Update:
    """The statement that ends the tasks ``where`` selects in ``state``, with ``exc`` as their outcome."""
    finished = time.time() if at is None else at
    return tasks.update().where(*where).values(state=state, finished_at=finished, result=dump(exc), error=describe(exc))


meta = sa.Table(
    META,
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255)),
)


def _to_2(conn: Connection) -> None:
    """Schema 2: the state RECEIVED among the unfinished ones, keys held once, executors' flushed_at."""
    conn.execute(sa.text("ALTER TABLE localabort_executors ADD COLUMN flushed_at FLOAT"))
    new = ("ix_localabort_tasks_unfinished", "ux_localabort_tasks_held_key")
    for index in tasks.indexes:
        if index.name == "ix_localabort_tasks_unfinished":  # it left RECEIVED out
            index.drop(conn)
        if index.name in new:
            index.create(conn)


def _to_3(conn: Connection) -> None:
    """Schema 3: who asked a task's abort, when to kill its worker, its error as text, and its retries.

    The state RETRY is unfinished, and holds its key: both partial indexes are made again.
    """
    for column in ("abort_by VARCHAR(255)", "terminate_at FLOAT", "error TEXT", "retries INTEGER", "eta FLOAT"):
        conn.execute(sa.text(f"ALTER TABLE localabort_tasks ADD COLUMN {column}"))
    _remake_indexes(conn, "ix_localabort_tasks_unfinished", "ux_localabort_tasks_held_key")


def _remake_indexes(conn: Connection, *names: str) -> None:
    """Drop the indexes ``names`` and make them again as ``tasks`` defines them now."""
    for index in tasks.indexes:
        if index.name in names:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {index.name}"))
            index.create(conn)


def _to_4(conn: Connection) -> None:
    """Schema 4: an index of the unfinished tasks with an abort asked (the abort poll read every unfinished one)."""
    _remake_indexes(conn, "ix_localabort_tasks_aborting")


def _to_5(conn: Connection) -> None:
    """Schema 5: each task's arguments as text, and an index of the running tasks (both for the dashboard)."""
    conn.execute(sa.text("ALTER TABLE localabort_tasks ADD COLUMN args_repr TEXT"))
    _remake_indexes(conn, "ix_localabort_tasks_running")


def _to_6(conn: Connection) -> None:
    """Schema 6: each executor's PID namespace, so a reader in the same one recovers it the moment it dies."""
    conn.execute(sa.text("ALTER TABLE localabort_executors ADD COLUMN pid_namespace VARCHAR(96)"))


def _to_7(conn: Connection) -> None:
    """Schema 7: what each task used (its worker, CPU time, peak memory), each task's log, tasks by end."""
    for column in ("worker_pid INTEGER", "cpu_seconds FLOAT", "peak_rss BIGINT"):
        conn.execute(sa.text(f"ALTER TABLE localabort_tasks ADD COLUMN {column}"))
    logs.create(conn, checkfirst=True)  # made already where the store made its missing tables first
    _remake_indexes(conn, "ix_localabort_tasks_finished")


#: Upgrades from each older schema version to the next.
MIGRATIONS: Dict[int, Callable[[Connection], None]] = {1: _to_2, 2: _to_3, 3: _to_4, 4: _to_5, 5: _to_6, 6: _to_7}
