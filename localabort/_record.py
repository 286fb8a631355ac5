"""A task as the store holds it: ``TaskRecord``, made from a row of the tasks table.

Its own module, without SQLAlchemy: ``Store`` makes records from the
rows of any driver, ``sqlite3``'s on an SQLite file (``_sqlite``), so
``localabort status`` runs in the time of a bare interpreter.

>>> row = ("t1", "jobs.Add", "SUCCESS", 2.0, 4.0)
>>> records([row], ["id", "name", "state", "progress_done", "progress_total"])[0].progress
(2, 4)
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ._states import Progress, usage

__all__ = ["COLUMNS", "TaskRecord", "record", "records"]

#: The columns of the tasks table a ``TaskRecord`` is made of (a query may leave any out: it reads as NULL).
COLUMNS = (
    "id", "name", "state", "executor_id", "key", "submitted_at", "started_at", "finished_at", "progress_done",
    "progress_total", "abort_requested_at", "result", "traceback", "error", "terminate_at", "abort_by", "retries",
    "eta", "args_repr", "worker_pid", "cpu_seconds", "peak_rss",
)  # fmt: skip


class _Columns:
    """A row's values by column name, through a mapping of names to positions made once per query."""

    __slots__ = ("at", "row")

    def __init__(self, row: Any, at: Dict[str, int]) -> None:
        self.row, self.at = row, at

    def __getitem__(self, key: str) -> Any:
        i = self.at.get(key)
        return None if i is None else self.row[i]  # a column the query did not read: as if NULL


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
    error: Optional[str] = None  # "Type: message" of a task that did not succeed
    terminate_at: Optional[float] = None  # when its worker is to be killed, if an abort asked for that
    abort_requested_at: Optional[float] = None
    abort_by: Optional[str] = None  # who asked for the abort, in words
    retries: int = 0  # attempts retried so far
    eta: Optional[float] = None  # when a task in RETRY runs its next attempt
    args_repr: Optional[str] = None  # its arguments as text, written at submit
    worker_pid: Optional[int] = None  # the process that runs or ran it (its last attempt), from its start
    cpu_seconds: Optional[float] = None  # the CPU time it used, once it ended
    peak_rss: Optional[int] = None  # its peak resident memory in bytes, once it ended

    @property
    def usage(self) -> Optional[Dict[str, Any]]:
        """``worker_pid``, ``cpu_seconds`` and ``peak_rss`` of a task that ran to its end, else ``None``."""
        return usage(self.worker_pid, self.cpu_seconds, self.peak_rss)


def _number(x: float) -> float:
    return int(x) if x == int(x) else x


def record(row: Any) -> TaskRecord:
    """The ``TaskRecord`` of one row of ``tasks``."""
    return records([row], row._fields)[0]


def records(rows: Any, keys: Any) -> List[TaskRecord]:
    """The ``TaskRecord`` of each row (a tuple of the columns ``keys``): one loop, no per-row mapping."""
    at = {key: i for i, key in enumerate(keys)}
    return [_record(row, at) for row in rows]


def _record(row: Any, at: Dict[str, int]) -> TaskRecord:
    m = _Columns(row, at)
    done = m["progress_done"]
    total = m["progress_total"]
    progress = None if done is None else (_number(done), None if total is None else _number(total))
    return TaskRecord(
        m["id"], m["name"], m["state"], m["executor_id"], m["key"], m["submitted_at"],
        m["started_at"], m["finished_at"], progress, m["abort_requested_at"] is not None,
        m["result"], m["traceback"], m["error"], m["terminate_at"], m["abort_requested_at"], m["abort_by"],
        m["retries"] or 0, m["eta"], m["args_repr"], m["worker_pid"], m["cpu_seconds"], m["peak_rss"],
    )  # fmt: skip
