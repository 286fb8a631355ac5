"""The store's listings: tasks newest first, as records or as JSON the database writes, counts by state, lookups.

``Listing`` is a base of ``Store``: its SQL is text, run on a DB-API
cursor the store hands out (``_reading``), so on an SQLite file it runs
on ``sqlite3`` alone (``_sqlite``), without SQLAlchemy's import, and on
PostgreSQL on the connection of the store's engine. It reads and never
writes: ``localabort status``, ``show`` and ``watch`` come here, and the
executor for one task's row and for the tasks its keyed jobs follow (the
dashboard has SQL of its own, ``_board``).

A whole JSON listing of an SQLite store (``json_pieces``) is written by
SQLite in ``PIECES`` parts at once: SQLite spends a listing's time
writing its JSON (3 µs an object here), in C, without the GIL. So the
tasks are cut into ranges of ``submitted_at`` of about equal size, and
each range's objects are written and joined (``group_concat``) on a
thread and connection of its own: no Python object per task, and every
core at work. Each piece comes as soon as it is written, so the first
are printed while the last are still being written.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import sqlite3
import time
from typing import Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ._record import COLUMNS, TaskRecord, records
from ._sql import ID_BATCH, STANDING, TASKS, UNFINISHED, pieces, spelled

__all__ = ["JSON_FIELDS", "PIECES", "PIECE_ROWS", "Listing", "ascii_json"]

#: How many pieces of a whole listing are written at once (``Listing.json_pieces``): on 2 cores, 4 pieces end
#: sooner than 2 (the last to end waits less); on one core, a thread costs less than a millisecond.
PIECES = 4
#: A listing of fewer than twice this many tasks is written in one piece: a thread would cost more than it saves.
PIECE_ROWS = 5000


class Listing:
    """The listings of a store (a base class: the subclass gives the store's ``name`` and a cursor to read on)."""

    name: str

    @property
    def postgres(self) -> bool:
        raise NotImplementedError  # ``Store.postgres``

    @property
    def _one_file(self) -> bool:
        """Whether the store is an SQLite file read with ``sqlite3``, each ``_reading`` on a connection of its own."""
        return False

    def _sql(self, text: str) -> str:
        """``text``, whose parameters are written ``:name``, in the driver's own parameter style and words."""
        return spelled(text, self.postgres)

    def _reading(self) -> ContextManager[Any]:
        """A DB-API cursor for reads; any database failure in the block becomes ``StoreError`` naming the store.

        Each call holds a connection of its own until its block ends, so
        threads may read at the same moment (``json_pieces`` does).
        """
        raise NotImplementedError

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
        columns = COLUMNS if outcomes else [c for c in COLUMNS if c not in _OUTCOME_COLUMNS]
        rows, keys = self._listing(", ".join(columns), ids, states, name, limit)
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
        rows, _ = self._listing(self._json_object(), ids, states, name, limit)
        return [ascii_json(text) for (text, *_) in rows]

    def json_pieces(
        self,
        ids: Optional[Iterable[str]] = None,
        *,
        states: Optional[Iterable[str]] = None,
        name: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Iterator[str]:
        """What ``localabort status --json`` writes between its brackets: ``tasks_json``'s objects, in pieces.

        Joined by ``",\n"``, the pieces are the objects in order, one a
        line. A whole listing of an SQLite store comes in a few pieces,
        each written by SQLite, in parallel (the module's docstring says
        why); any other, an object a piece.
        """
        if ids is not None or limit is not None or not self._one_file:
            yield from self.tasks_json(ids, states=states, name=name, limit=limit)
            return
        states = None if states is None else list(states)  # read by every piece
        cuts = self._cuts(PIECES)
        builder = self._json_object()  # one time for every piece's ``age_seconds``
        with concurrent.futures.ThreadPoolExecutor(len(cuts) + 1) as threads:
            found = [threads.submit(self._joined, builder, states, name, newer, older)
                     for newer, older in zip([None, *cuts], [*cuts, None])]  # fmt: skip
            for piece in found:  # each as soon as it and those before it are written
                text = piece.result()
                if text:
                    yield text

    def _cuts(self, count: int) -> List[float]:
        """The ``submitted_at`` of every ``total / count``-th task, newest first: where to cut a listing in pieces."""
        with self._reading() as cur:
            cur.execute(f"SELECT count(*) FROM {TASKS}")
            ((total,),) = cur.fetchall()
            cuts = []
            for i in range(1, count if total >= PIECE_ROWS * 2 else 1):
                cur.execute(f"SELECT submitted_at FROM {TASKS} WHERE submitted_at IS NOT NULL "
                            f"ORDER BY submitted_at DESC LIMIT 1 OFFSET {total * i // count}")  # fmt: skip
                cuts += [at for (at,) in cur.fetchall()]
        return cuts

    def _joined(
        self, builder: str, states: Optional[Iterable[str]], name: Optional[str], newer: Optional[float],
        older: Optional[float],
    ) -> str:  # fmt: skip
        """The JSON objects (``builder``) of the tasks in ``states`` named ``name``, submitted before ``newer`` and
        at or after ``older`` (``None``: no bound), joined in one string. Tasks with no ``submitted_at`` are oldest."""
        where = []
        if older is not None:
            where.append("submitted_at >= :older")
        if newer is not None:
            where.append(
                "submitted_at < :newer" if older is not None else "(submitted_at < :newer OR submitted_at IS NULL)"
            )
        query, params = self._select(f"{builder} AS listed", None, states, name, None, where)
        params.update(newer=newer, older=older)
        with self._reading() as cur:
            cur.execute(_JOINED.format(query=query), params)
            ((joined,),) = cur.fetchall()
        if joined is None or joined.isascii():
            return joined or ""
        return ",\n".join(ascii_json(line) for line in joined.split(",\n"))  # JSON has no newline in a string

    def _json_object(self) -> str:
        """The SQL that writes a task's JSON object, for this store's database, at this time."""
        return _JSON_ROW["postgresql" if self.postgres else "sqlite"].format(now=repr(time.time()))

    def _listing(
        self, columns: str, ids: Optional[Iterable[str]], states: Optional[Iterable[str]], name: Optional[str],
        limit: Optional[int],
    ) -> Tuple[List[Any], List[str]]:  # fmt: skip
        """The rows of ``columns`` (SQL) of the tasks ``tasks`` lists, newest first, and their keys."""
        if ids is not None:
            ids = list(ids)
            if len(ids) > ID_BATCH:
                parts = [self._listing(columns, piece, states, name, None) for piece in pieces(ids)]
                rows = sorted(itertools.chain(*(part for part, _ in parts)), key=lambda row: -(row[-1] or 0.0))
                return rows[:limit], parts[0][1]
        query, params = self._select(columns, ids, states, name, limit)
        with self._reading() as cur:
            cur.execute(query, params)
            return cur.fetchall(), _keys(cur)  # one fetchall, not a fetch per row

    def _select(
        self, columns: str, ids: Optional[List[str]], states: Optional[Iterable[str]], name: Optional[str],
        limit: Optional[int], where: Sequence[str] = (),
    ) -> Tuple[str, Dict[str, Any]]:  # fmt: skip
        """The query of ``_listing``, and any conditions ``where`` besides, in the driver's words; its parameters."""
        params: Dict[str, Any] = {}
        conditions = [f"name != '{STANDING}'", *where]
        if ids is not None:
            conditions.append(_within("id", ids, params))
        if states is not None:
            conditions.append(_within("state", list(states), params))
        if name is not None:
            conditions.append(r"name LIKE :name ESCAPE '\'")
            params["name"] = "%" + _like(name) + "%"
        query = f"SELECT {columns}, submitted_at AS _newest FROM {TASKS} WHERE {' AND '.join(conditions)} "
        query += "ORDER BY submitted_at DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
        return self._sql(query), params

    def counts(self, *, finished: bool = True) -> Dict[str, int]:
        """How many tasks the store holds in each state; with ``finished=False``, the finished ones as one count.

        Counting the finished states reads every row; the other way reads
        the small index of unfinished tasks, and counts all rows through
        the smallest index (what ``localabort status`` does on a large store).
        """
        by_state = f"SELECT state, count(*) FROM {TASKS} WHERE name != '{STANDING}'"
        with self._reading() as cur:
            if finished:
                cur.execute(f"{by_state} GROUP BY state")
                return dict(cur.fetchall())
            cur.execute(f"{by_state} AND {UNFINISHED} GROUP BY state")
            counts = dict(cur.fetchall())
            standing_aborts = f"executor_id IS NULL AND name = '{STANDING}' AND {UNFINISHED}"
            cur.execute(f"SELECT count(*) FROM {TASKS} WHERE {standing_aborts}")
            ((standing,),) = cur.fetchall()
            cur.execute(f"SELECT count(*) FROM {TASKS}")
            ((total,),) = cur.fetchall()
        counts["finished"] = (total or 0) - (standing or 0) - sum(counts.values())
        return counts

    def get(self, task_id: str) -> Optional[TaskRecord]:
        """The task ``task_id`` as stored, or ``None``."""
        query = f"SELECT {', '.join(COLUMNS)} FROM {TASKS} WHERE id = :id AND name != '{STANDING}'"
        with self._reading() as cur:
            cur.execute(self._sql(query), {"id": task_id})
            found = records(cur.fetchall(), _keys(cur))
        return found[0] if found else None

    def match(self, fragment: str, limit: int = 5) -> List[str]:
        """Ids of tasks that start or end with ``fragment`` (what a label shows), at most ``limit``.

        >>> import os, tempfile
        >>> from localabort._store import Store
        >>> store = Store.open(os.path.join(tempfile.mkdtemp(), "s.sqlite"), create=True)
        >>> store.match("0f27")
        []
        """
        like = _like(fragment)
        query = (
            f"SELECT id FROM {TASKS} WHERE name != '{STANDING}' "
            rf"AND (id LIKE :starts ESCAPE '\' OR id LIKE :ends ESCAPE '\') LIMIT {int(limit)}"
        )
        with self._reading() as cur:
            cur.execute(self._sql(query), {"starts": like + "%", "ends": "%" + like})
            return [task_id for (task_id,) in cur.fetchall()]


def ascii_json(text: str) -> str:
    """JSON ``text`` with any character outside ASCII escaped, as ``json.dumps`` writes it.

    >>> ascii_json('{"name": "caf\u00e9"}')
    '{"name": "caf\\\\u00e9"}'
    """
    return text if text.isascii() else json.dumps(json.loads(text))


def _like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it alone (``ESCAPE '\\'``): its wildcards and escapes escaped.

    >>> _like("50%_off")
    '50\\\\%\\\\_off'
    """
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _keys(cursor: Any) -> List[str]:
    """The names of the columns of ``cursor``'s last query."""
    return [column[0] for column in cursor.description]


def _within(column: str, values: List[str], params: Dict[str, Any]) -> str:
    """``column IN (...)`` of ``values``, each a parameter added to ``params``."""
    names = [f"{column}{i}" for i in range(len(values))]
    params.update(zip(names, values))
    return f"{column} IN ({', '.join(':' + n for n in names)})" if values else "1 = 0"


#: The columns of a task's outcome: large, and unpickled only by those who read it.
_OUTCOME_COLUMNS = ("result", "traceback")
#: The fields of a task in ``localabort status --json``, in order.
JSON_FIELDS = (
    "id", "name", "state", "progress", "error", "abort_requested", "abort_requested_at", "abort_by", "terminate_at",
    "key", "executor_id", "submitted_at", "started_at", "finished_at", "age_seconds",
    "worker_pid", "cpu_seconds", "peak_rss",
)  # fmt: skip

# Joined in the subquery's order: SQLite 3.44 says so in the aggregate; before, SQLite keeps a FROM
# subquery's ORDER BY when the query around it is an aggregate of that one source, with no ORDER BY of its own.
_JOINED = (
    "SELECT group_concat(listed, ',\n' ORDER BY _newest DESC) FROM ({query})"
    if sqlite3.sqlite_version_info >= (3, 44)
    else "SELECT group_concat(listed, ',\n') FROM ({query})"
)

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


# SQLite spends its time on a listing's JSON in turning numbers into text: ``round()`` prints and parses each
# value, and ``json('true')`` parses each row's; milliseconds counted and rounded as integers, and the two
# booleans parsed once (a constant expression), halve what those two fields cost.
_SQLITE_FIELDS = {
    "progress": _progress("json_array", _sqlite_whole),
    "abort_requested": "CASE WHEN abort_requested_at IS NULL THEN json('false') ELSE json('true') END",
    "age_seconds": "CAST(round(({now} - submitted_at) * 1000) AS INTEGER) / 1000.0",
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
