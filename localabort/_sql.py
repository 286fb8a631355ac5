"""The store's SQL that needs no SQLAlchemy: its tables' names, the conditions of its partial indexes, and the
executor's group commit (``sync``), run on a DB-API cursor.

Why a module without SQLAlchemy. The recorder (``_recorder``) makes every
group commit of a long batch in a process of its own; on an SQLite store it
makes them with the ``sqlite3`` module alone, so it starts in the time of a
bare interpreter (90 ms here) rather than that of SQLAlchemy's import
(350 ms), and a batch of a few thousand tasks has it from its first tenth
of a second. The parent's ``Store.sync`` runs the same function, on its
own ``sqlite3`` connection (``_sqlite``) or, on PostgreSQL, on the cursor
of SQLAlchemy's: one text of each statement, whoever runs it. Statements
are written once, with ``:name`` parameters; ``spelled`` gives a driver
its own style (psycopg's ``%(name)s``) and words.

>>> "localabort_tasks" in state_upsert(2) and state_upsert(2).count("?") == 2 * len(COLUMNS)
True
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import re
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ._states import CLAIMABLE_STATES, HELD_STATES, RECEIVED, RETRY, STARTED, STATE_COLUMNS, UNREADY_STATES

__all__ = [
    "ABORTING", "BUSY_TIMEOUT", "CELERY", "CLAIMABLE", "EXECUTORS", "HELD_KEY", "ID_BATCH", "LOGS", "LOG_UPSERT",
    "META", "RUNNING", "SCHEMA_VERSION", "SQLITE_CONNECT", "SQLITE_PRAGMAS", "STANDING", "TASKS", "UNFINISHED",
    "existing_file", "pieces", "reason", "spelled", "sync", "write",
]  # fmt: skip

TASKS, EXECUTORS, LOGS, META = "localabort_tasks", "localabort_executors", "localabort_logs", "localabort_meta"
#: The version of the store's schema this localabort reads and writes (``_schema``'s ``MIGRATIONS`` reach it).
SCHEMA_VERSION = 7
#: What every connection to an SQLite store sets first, the parent's engine's and the recorder's alike
#: (WAL is the file's own, set at its creation).
SQLITE_PRAGMAS = ("PRAGMA synchronous=NORMAL",)
#: Seconds a connection to an SQLite store waits for its lock before it fails.
BUSY_TIMEOUT = 60.0
#: How every ``sqlite3`` connection to a store is made, the engine's aside: the busy timeout, no transaction
#: begun behind the caller's back, usable from any thread.
SQLITE_CONNECT: Dict[str, Any] = {"timeout": BUSY_TIMEOUT, "check_same_thread": False, "isolation_level": None}


def existing_file(path: str) -> str:
    """The ``sqlite3`` URI (``uri=True``) that opens the store file at ``path`` only if it exists, never a new one.

    >>> existing_file("/tmp/a store.sqlite")
    'file:/tmp/a%20store.sqlite?mode=rw'
    """
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw"


def _states_in(states: Any) -> str:
    return "state IN (" + ", ".join(f"'{state}'" for state in sorted(states)) + ")"


# Written out, not bound: SQLite uses a partial index only when it can see the
# query's condition implies the index's, which bound parameters hide.
UNFINISHED = _states_in(UNREADY_STATES)
#: An unfinished task with an abort asked: the rows an executor's abort poll looks for.
ABORTING = f"abort_requested_at IS NOT NULL AND {UNFINISHED}"
#: A task a worker holds, or that waits to retry: at most one such task per name and key.
HELD_KEY = f"key IS NOT NULL AND {_states_in(HELD_STATES)}"
#: A task a worker runs.
RUNNING = f"state = '{STARTED}'"
#: A task that may be claimed for a worker: new, or waiting for its next attempt.
CLAIMABLE = _states_in(CLAIMABLE_STATES)
#: The name of a standing abort's row: no task has it.
STANDING = ""
#: The ``executor_id`` of Celery's rows no worker process holds: PENDING, waiting to retry, or to be delivered again.
CELERY = "celery"

#: Task ids one query asks about at most.
ID_BATCH = 5000


def pieces(ids: List[str]) -> Iterator[List[str]]:
    """``ids`` in pieces of ``ID_BATCH``: a database bounds one statement's parameters (SQLite: 32,766)."""
    for i in range(0, len(ids), ID_BATCH):
        yield ids[i : i + ID_BATCH]


def reason(exc: BaseException) -> str:
    """The database's own words for a failure, on one line (SQLAlchemy's wrapped error, or the driver's).

    >>> reason(OSError("disk I/O error\\nmore"))
    'disk I/O error'
    """
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def spelled(text: str, postgres: bool) -> str:
    """``text``, whose parameters are written ``:name``, in the driver's own parameter style and words.

    >>> spelled("SELECT LEAST(a, :b)", postgres=False), spelled("SELECT LEAST(a::text, :b)", postgres=True)
    ('SELECT MIN(a, :b)', 'SELECT LEAST(a::text, %(b)s)')
    """
    if not postgres:
        return text.replace("LEAST(", "MIN(")  # SQLite's MIN of two or more values is PostgreSQL's LEAST
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", text)  # not a cast, ``x::text``


COLUMNS = ("id", *STATE_COLUMNS)
#: What a state write leaves as stored when it gives none: written once, at submit, by the submitter alone.
_KEPT = {"args_repr"}
#: Who may write a stored, unfinished row: its own executor; anyone where it has none yet (a standing abort);
#: and Celery, to whose queue a worker hands back a task that waits to retry.
_OWNS = (
    f"({TASKS}.executor_id IS NULL OR {TASKS}.executor_id = excluded.executor_id "
    f"OR (excluded.executor_id = '{CELERY}' AND excluded.state = '{RETRY}'))"
)
#: A state write, after the values of its rows: a final state stays final, the abort request is not touched,
#: and one executor's row is never taken over by another's write of the same id (``sync`` finds it taken).
_STATE_SET = (
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(excluded.{c}, {TASKS}.{c})" if c in _KEPT else f"{c} = excluded.{c}"
                for c in STATE_COLUMNS)
    + f" WHERE {TASKS}.{UNFINISHED} AND {_OWNS}"
)  # fmt: skip
_STATE_INSERT = f"INSERT INTO {TASKS} ({', '.join(COLUMNS)}) VALUES "
#: A state write of one row, its parameters named.
STATE_UPSERT = f"{_STATE_INSERT}({', '.join(':' + c for c in COLUMNS)}) {_STATE_SET}"
#: Rows one state write binds at most: 19 columns each, under SQLite's oldest limit of 999 parameters.
_PIECE = 32
#: A row's values in the order of ``COLUMNS``.
_row_values = operator.itemgetter(*COLUMNS)


@functools.cache
def state_upsert(size: int) -> str:
    """A state write of ``size`` rows in one SQLite statement, their parameters row after row.

    SQLite applies the rows in order, as one statement each would: a row
    for an id an earlier row of the statement wrote finds that row.
    """
    one = "(" + ", ".join(["?"] * len(COLUMNS)) + ")"
    return f"{_STATE_INSERT}{', '.join([one] * size)} {_STATE_SET}"


#: A task's log, replacing the one stored (the logs of tasks that ended go on being written: ``Store.log``).
LOG_UPSERT = (
    f"INSERT INTO {LOGS} (task_id, text, dropped) VALUES (:task_id, :text, :dropped) "
    "ON CONFLICT (task_id) DO UPDATE SET text = excluded.text, dropped = excluded.dropped"
)
#: The earlier of a stored time and a new one, either of which may be NULL (``LEAST`` is ``spelled``'s to spell).
_EARLIER = "LEAST(COALESCE({old}, {new}), COALESCE({new}, {old}))"
#: An abort request, for a row that may not exist yet: on one that does, the first request and the
#: earliest ``terminate_at`` are kept.
_ABORT_UPSERT = (
    f"INSERT INTO {TASKS} ({', '.join(COLUMNS)}, abort_requested_at, abort_by, terminate_at) "
    f"VALUES ({', '.join(':' + c for c in COLUMNS)}, :abort_requested_at, :abort_by, :terminate_at) "
    f"ON CONFLICT (id) DO UPDATE SET abort_requested_at = "
    f"COALESCE({TASKS}.abort_requested_at, excluded.abort_requested_at), "
    f"abort_by = COALESCE({TASKS}.abort_by, excluded.abort_by), "
    f"terminate_at = {_EARLIER.format(old=f'{TASKS}.terminate_at', new='excluded.terminate_at')}"
)
_FLUSHED = f"UPDATE {EXECUTORS} SET flushed_at = :flushed_at WHERE id = :id"
_HOLDER = f"SELECT id FROM {TASKS} WHERE name = :name AND {HELD_KEY} AND key = :key AND id <> :id"
_CLAIM_KEYED = f"UPDATE {TASKS} SET state = '{RECEIVED}' WHERE id = :id AND executor_id = :me AND {CLAIMABLE}"


def write(cur: Any, postgres: bool, rows: Sequence[Dict[str, Any]], aborts: Sequence[Dict[str, Any]]) -> None:
    """Write task rows and abort requests on ``cur``, inside the caller's transaction (``Store.write`` says how)."""
    if aborts:
        aborts = [{"terminate_at": None, "abort_by": None, **row} for row in aborts]
        cur.executemany(spelled(_ABORT_UPSERT, postgres), aborts)
    if postgres:  # psycopg sends the rows in one pipeline, to one prepared statement
        if rows:
            cur.executemany(spelled(STATE_UPSERT, postgres), rows)
            _write_logs(cur, postgres, rows)
        return
    # sqlite3's executemany steps once per row, and lets go of the GIL and takes it back each time: a
    # hand-off to a busy thread may cost the 5 ms switch interval. One statement takes many rows.
    for at in range(0, len(rows), _PIECE):
        piece = rows[at : at + _PIECE]
        cur.execute(state_upsert(len(piece)), list(itertools.chain.from_iterable(map(_row_values, piece))))
    _write_logs(cur, postgres, rows)


def _write_logs(cur: Any, postgres: bool, rows: Sequence[Dict[str, Any]]) -> None:
    """The logs some ``rows`` carry (``log``: its text, and the bytes dropped before it), replacing any stored."""
    found = [{"task_id": r["id"], "text": r["log"][0], "dropped": r["log"][1]} for r in rows if "log" in r]
    if found:
        cur.executemany(spelled(LOG_UPSERT, postgres), found)


def sync(
    cur: Any, postgres: bool, executor_id: str, rows: Sequence[Dict[str, Any]], aborts: Sequence[Dict[str, Any]],
    claims: Sequence[Tuple[str, str, Optional[str]]], flushed_at: Optional[float],
) -> Tuple[List[str], Dict[str, str]]:  # fmt: skip
    """An executor's group commit on ``cur``, inside the caller's write transaction (``Store.sync`` says what)."""
    mark = "%s" if postgres else "?"
    found: List[str] = []
    held: Dict[str, str] = {}
    write(cur, postgres, rows, aborts)
    # First or not, a write: under SQLite's one writer lock no abort lands between here and the commit.
    if flushed_at is not None:
        cur.execute(spelled(_FLUSHED, postgres), {"flushed_at": flushed_at, "id": executor_id})
    for piece in pieces([task_id for task_id, _, _ in claims]):
        ids = ", ".join([mark] * len(piece))
        cur.execute(f"SELECT id FROM {TASKS} WHERE id IN ({ids}) AND executor_id <> {mark}", [*piece, executor_id])
        held.update((task_id, task_id) for (task_id,) in cur.fetchall())
    for task_id, name, key in claims:
        if key is not None and task_id not in held:
            holder = _claim_key(cur, postgres, task_id, name, key, executor_id)
            if holder is not None:
                held[task_id] = holder
    carried = {row["id"] for row in rows if row["state"] == RECEIVED}  # claimed by their rows' upsert
    unkeyed = [task_id for task_id, _, key in claims if key is None and task_id not in held]
    for piece in pieces([task_id for task_id in unkeyed if task_id not in carried]):
        ids = ", ".join([mark] * len(piece))
        cur.execute(f"UPDATE {TASKS} SET state = '{RECEIVED}' WHERE {CLAIMABLE} AND id IN ({ids})", piece)
    for piece in pieces([task_id for task_id, _, _ in claims if task_id not in held]):
        ids = ", ".join([mark] * len(piece))
        cur.execute(f"SELECT id FROM {TASKS} WHERE abort_requested_at IS NOT NULL AND id IN ({ids})", piece)
        found += [task_id for (task_id,) in cur.fetchall()]
    return found, held


def _claim_key(cur: Any, postgres: bool, task_id: str, name: str, key: str, executor_id: str) -> Optional[str]:
    """Claim the keyed task ``task_id`` unless another task holds its key; return that task's id, or ``None``.

    A unique index lets one task per name and key be RECEIVED or
    STARTED; the claim asks first, so it never trips it. SQLite has one
    writer at a time; on PostgreSQL, claims of one key wait on a lock of its own.
    """
    if postgres:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{name}\n{key}",))
    values = {"id": task_id, "name": name, "key": key, "me": executor_id}
    cur.execute(spelled(_HOLDER, postgres), values)
    holder = cur.fetchone()
    if holder is not None:
        return str(holder[0])
    cur.execute(spelled(_CLAIM_KEYED, postgres), values)
    return None
