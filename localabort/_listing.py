"""The store's listings: tasks newest first, as records or as JSON the database writes, and counts by state.

``Listing`` is a base of ``Store``, as ``Registry`` is: its SQL goes
through the store's own connections, and its failures read as the store's.
It reads and never writes: ``localabort status``, ``show`` and ``watch``
come here, and the executor for the tasks its keyed jobs follow (the
dashboard has SQL of its own, ``_board``).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Tuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._schema import TaskRecord, records, tasks
from ._sql import ID_BATCH, STANDING, UNFINISHED, pieces

__all__ = ["JSON_FIELDS", "Listing"]


class Listing:
    """The listings of a store (a base of ``Store``, which gives the engine and the connections)."""

    @property
    def engine(self) -> Engine:
        raise NotImplementedError  # ``Store.engine``

    def _connect(self) -> ContextManager[Connection]:
        raise NotImplementedError  # ``Store._connect``

    def tasks(
        self,
        ids: Optional[Iterable[str]] = None,
        *,
        states: Optional[Iterable[str]] = None,
        name: Optional[str] = None,
        limit: Optional[int] = None,
        outcomes: bool = True,
    ) -> List[TaskRecord]:
        """Tasks newest first: all, or those of ``ids``, in ``states``, whose name contains ``name``.

        ``outcomes=False`` leaves out each task's pickled result and
        traceback (``None`` in the records): what a listing never shows,
        and most of the bytes of a large store.
        """
        columns: List[Any] = list(tasks.c)
        if not outcomes:
            columns = [c for c in columns if c.name not in _OUTCOME_COLUMNS]
            columns += [sa.null().label(c) for c in _OUTCOME_COLUMNS]
        rows, keys = self._listing(columns, ids, states, name, limit)
        return records(rows, keys)

    def tasks_json(
        self,
        ids: Optional[Iterable[str]] = None,
        *,
        states: Optional[Iterable[str]] = None,
        name: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> List[str]:
        """The tasks ``tasks(..., outcomes=False)`` lists, each as a JSON object (``localabort status --json``).

        The database writes each object (``JSON_FIELDS``, and ``age_seconds``
        at the time of the call), so a listing of 100,000 tasks builds no
        Python object per field. Text outside ASCII is escaped, as
        ``json.dumps`` does: no raw control or bidi character reaches a terminal.
        """
        builder = _JSON_ROW[self.engine.dialect.name].format(now=repr(time.time()))
        rows, _ = self._listing([sa.literal_column(builder)], ids, states, name, limit)
        return [text if text.isascii() else json.dumps(json.loads(text)) for (text, *_) in rows]

    def _listing(
        self, columns: List[Any], ids: Optional[Iterable[str]], states: Optional[Iterable[str]],
        name: Optional[str], limit: Optional[int],
    ) -> Tuple[List[Any], List[str]]:  # fmt: skip
        """The rows of ``columns`` of the tasks ``tasks`` lists, newest first, and their keys."""
        columns = [*columns, tasks.c.submitted_at.label("_newest")]  # to merge pieces by
        query = sa.select(*columns).where(tasks.c.name != STANDING).order_by(tasks.c.submitted_at.desc())
        if ids is not None:
            ids = list(ids)
            if len(ids) > ID_BATCH:
                parts = [self._listing(columns[:-1], piece, states, name, None) for piece in pieces(ids)]
                rows = sorted(itertools.chain(*(part for part, _ in parts)), key=lambda row: -(row[-1] or 0.0))
                return rows[:limit], parts[0][1]
            query = query.where(tasks.c.id.in_(ids))
        if states is not None:
            query = query.where(tasks.c.state.in_(list(states)))
        if name is not None:
            query = query.where(tasks.c.name.contains(name, autoescape=True))
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            result = conn.execute(query)
            return list(result.all()), list(result.keys())  # one fetchall, not a fetch per row

    def counts(self, *, finished: bool = True) -> Dict[str, int]:
        """How many tasks the store holds in each state; with ``finished=False``, the finished ones as one count.

        Counting the finished states reads every row; the other way reads
        the small index of unfinished tasks, and counts all rows through
        the smallest index (what ``localabort status`` does on a large store).
        """
        by_state = sa.select(tasks.c.state, sa.func.count()).where(tasks.c.name != STANDING).group_by(tasks.c.state)
        with self._connect() as conn:
            if finished:
                return {state: count for state, count in conn.execute(by_state)}
            counts = {state: count for state, count in conn.execute(by_state.where(sa.text(UNFINISHED)))}
            standing = conn.execute(
                sa.select(sa.func.count()).where(tasks.c.executor_id.is_(None), tasks.c.name == STANDING,
                                                 sa.text(UNFINISHED))
            ).scalar()  # fmt: skip
            total = conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar()
        counts["finished"] = (total or 0) - (standing or 0) - sum(counts.values())
        return counts


#: The columns of a task's outcome: large, and unpickled only by those who read it.
_OUTCOME_COLUMNS = ("result", "traceback")
#: The fields of a task in ``localabort status --json``, in order.
JSON_FIELDS = (
    "id", "name", "state", "progress", "error", "abort_requested", "abort_requested_at", "abort_by", "terminate_at",
    "key", "executor_id", "submitted_at", "started_at", "finished_at", "age_seconds",
    "worker_pid", "cpu_seconds", "peak_rss",
)  # fmt: skip

#: Below this a float holds every whole number exactly (2**53): larger ones stay floats in the JSON.
_EXACT = 9007199254740992


def _sqlite_whole(x: str) -> str:
    """SQLite: the column ``x`` as JSON writes it, ``3`` for a stored ``3.0`` (as ``TaskRecord.progress`` has it)."""
    return f"CASE WHEN abs({x}) < {_EXACT} AND {x} = CAST({x} AS INTEGER) THEN CAST({x} AS INTEGER) ELSE {x} END"


def _pg_whole(x: str) -> str:
    """PostgreSQL: the same as ``_sqlite_whole``, as a ``json`` value."""
    return f"CASE WHEN abs({x}) < {_EXACT} AND {x} = trunc({x}) THEN to_json({x}::bigint) ELSE to_json({x}) END"


def _progress(array: str, whole: Callable[[str], str]) -> str:
    """``[done, total]`` with the dialect's ``array`` function, or NULL for a task without progress."""
    pair = f"{array}({whole('progress_done')}, {whole('progress_total')})"
    return f"CASE WHEN progress_done IS NULL THEN NULL ELSE {pair} END"


_SQLITE_FIELDS = {
    "progress": _progress("json_array", _sqlite_whole),
    "abort_requested": "json(CASE WHEN abort_requested_at IS NULL THEN 'false' ELSE 'true' END)",
    "age_seconds": "round({now} - submitted_at, 3)",
}
_PG_FIELDS = {
    "progress": _progress("json_build_array", _pg_whole),
    "abort_requested": "abort_requested_at IS NOT NULL",
    "age_seconds": "round(({now} - submitted_at)::numeric, 3)",
}
#: Per dialect, the SQL that writes one task's JSON object (``Store.tasks_json``); ``{now}`` is the time.
_JSON_ROW = {
    dialect: function + "(" + ", ".join(f"'{f}', {fields.get(f, f)}" for f in JSON_FIELDS) + ")" + cast
    for dialect, function, fields, cast in (
        ("sqlite", "json_object", _SQLITE_FIELDS, ""),
        ("postgresql", "json_build_object", _PG_FIELDS, "::text"),
    )
}
