"""The store's schema: its tables and indexes, and a task row as ``TaskRecord``.

One row per task in ``localabort_tasks``. ``abort_requested_at`` is the
abort request, a fact of its own that state writes never touch;
``STATE_COLUMNS`` are what those writes set. A partial index covers only
unfinished tasks, so the executors' abort poll stays cheap however large
the store grows.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import sqlalchemy as sa

from ._states import PENDING, STARTED, STATE_COLUMNS, Progress, task_row

__all__ = [
    "SCHEMA_VERSION",
    "STATE_COLUMNS",
    "UNFINISHED",
    "TaskRecord",
    "executors",
    "meta",
    "metadata",
    "record",
    "task_row",
    "tasks",
]

SCHEMA_VERSION = 1

metadata = sa.MetaData()
# Written out, not bound: SQLite uses a partial index only when it can see the
# query's condition implies the index's, which bound parameters hide.
UNFINISHED = f"state IN ('{PENDING}', '{STARTED}')"

tasks = sa.Table(
    "localabort_tasks",
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
    sa.Column("result", sa.LargeBinary),
    sa.Column("traceback", sa.Text),
    sa.Index("ix_localabort_tasks_name_key", "name", "key"),
    sa.Index("ix_localabort_tasks_submitted_at", "submitted_at"),
    # Only unfinished tasks: the executors' abort poll reads this, and it stays small.
    sa.Index(
        "ix_localabort_tasks_unfinished",
        "executor_id",
        sqlite_where=sa.text(UNFINISHED),
        postgresql_where=sa.text(UNFINISHED),
    ),
)

executors = sa.Table(
    "localabort_executors",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hostname", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("process_start", sa.String(32)),  # tells a live pid from a reused one
    sa.Column("started_at", sa.Float),
    sa.Column("closed_at", sa.Float),
)

meta = sa.Table(
    "localabort_meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255)),
)


class TaskRecord(NamedTuple):
    """One task as the store holds it."""

    id: str
    name: str
    state: str
    executor_id: Optional[str]
    key: Optional[str]
    submitted_at: Optional[float]
    started_at: Optional[float]
    finished_at: Optional[float]
    progress: Optional[Progress]
    abort_requested: bool
    result: Optional[bytes]
    traceback: Optional[str]


def _number(x: float) -> float:
    return int(x) if x == int(x) else x


def record(row: Any) -> TaskRecord:
    m = row._mapping
    done = m["progress_done"]
    total = m["progress_total"]
    progress = None if done is None else (_number(done), None if total is None else _number(total))
    return TaskRecord(
        m["id"], m["name"], m["state"], m["executor_id"], m["key"], m["submitted_at"],
        m["started_at"], m["finished_at"], progress, m["abort_requested_at"] is not None,
        m["result"], m["traceback"],
    )  # fmt: skip
