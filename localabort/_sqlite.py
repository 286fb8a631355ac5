"""An SQLite store file through the ``sqlite3`` module alone: its connections, its schema made and checked.

Why. SQLAlchemy's import takes 130 ms here, longer than all the rest of
an executor's way from its constructor to its first result, and an
executor on an SQLite file needs none of it to start: its writes and reads
are text on a DB-API cursor (``_sql``, ``_listing``). So ``Store`` opens
such a file with ``sqlite3`` (``Connections``), makes a new store's
schema from ``SCHEMA``, and checks a current one (``prepare``); it imports
SQLAlchemy only for what these do not do (an older schema to upgrade, a
database that is not a store to refuse in its own words, a dead
executor's tasks to recover, a key's holder, PostgreSQL).

``SCHEMA`` is the text SQLAlchemy's SQLite DDL compiles ``_schema``'s
tables to, statement for statement; a test holds the two equal, so the
tables have one definition, ``_schema``'s.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "s.sqlite")
>>> open(path, "w").close()
>>> files = Connections(path)
>>> with files.connection() as conn:
...     prepare(conn, create=True) == SCHEMA_VERSION
True
>>> files.close()
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from typing import Any, Dict, Iterator, List, Optional, Set

from ._sql import (
    ABORTING,
    BUSY_TIMEOUT,
    EXECUTORS,
    HELD_KEY,
    LOGS,
    META,
    RUNNING,
    SCHEMA_VERSION,
    SQLITE_CONNECT,
    SQLITE_PRAGMAS,
    TASKS,
    UNFINISHED,
    existing_file,
)

__all__ = ["SCHEMA", "Connections", "connect", "opened", "prepare"]

_T = "\n\t"
#: The store's tables and indexes, as SQLAlchemy's SQLite DDL writes ``_schema``'s (``tests/test_sqlite.py``).
SCHEMA = (
    f"CREATE TABLE {EXECUTORS} ({_T}id VARCHAR(64) NOT NULL, {_T}hostname VARCHAR(255), {_T}pid INTEGER, "
    f"{_T}process_start VARCHAR(32), {_T}pid_namespace VARCHAR(96), {_T}started_at FLOAT, {_T}closed_at FLOAT, "
    f"{_T}flushed_at FLOAT, {_T}PRIMARY KEY (id)\n)",
    f"CREATE TABLE {LOGS} ({_T}task_id VARCHAR(64) NOT NULL, {_T}text TEXT NOT NULL, {_T}dropped BIGINT NOT NULL, "
    f"{_T}PRIMARY KEY (task_id)\n)",
    f"CREATE TABLE {META} ({_T}name VARCHAR(64) NOT NULL, {_T}value VARCHAR(255), {_T}PRIMARY KEY (name)\n)",
    f"CREATE TABLE {TASKS} ({_T}id VARCHAR(64) NOT NULL, {_T}executor_id VARCHAR(64), {_T}name VARCHAR(255) NOT NULL, "
    f'{_T}"key" VARCHAR(255), {_T}state VARCHAR(16) NOT NULL, {_T}submitted_at FLOAT, {_T}started_at FLOAT, '
    f"{_T}finished_at FLOAT, {_T}progress_done FLOAT, {_T}progress_total FLOAT, {_T}abort_requested_at FLOAT, "
    f"{_T}abort_by VARCHAR(255), {_T}terminate_at FLOAT, {_T}result BLOB, {_T}traceback TEXT, {_T}error TEXT, "
    f"{_T}retries INTEGER, {_T}eta FLOAT, {_T}args_repr TEXT, {_T}worker_pid INTEGER, {_T}cpu_seconds FLOAT, "
    f"{_T}peak_rss BIGINT, {_T}PRIMARY KEY (id)\n)",
    f"CREATE INDEX ix_localabort_tasks_aborting ON {TASKS} (executor_id) WHERE {ABORTING}",
    f"CREATE INDEX ix_localabort_tasks_finished ON {TASKS} (executor_id, finished_at) WHERE finished_at IS NOT NULL",
    f'CREATE INDEX ix_localabort_tasks_name_key ON {TASKS} (name, "key")',
    f"CREATE INDEX ix_localabort_tasks_running ON {TASKS} (started_at) WHERE {RUNNING}",
    f"CREATE INDEX ix_localabort_tasks_submitted_at ON {TASKS} (submitted_at)",
    f"CREATE INDEX ix_localabort_tasks_unfinished ON {TASKS} (executor_id) WHERE {UNFINISHED}",
    f'CREATE UNIQUE INDEX ux_localabort_tasks_held_key ON {TASKS} (name, "key") WHERE {HELD_KEY}',
)
_TABLES = (EXECUTORS, LOGS, META, TASKS)


def connect(path: str) -> sqlite3.Connection:
    """A connection to the existing store file ``path`` (never a new empty one), set up as every store's is."""
    return opened([existing_file(path)], {"uri": True, **SQLITE_CONNECT})


def opened(args: List[Any], kwargs: Dict[str, Any]) -> sqlite3.Connection:
    """``sqlite3.connect(*args, **kwargs)`` (``Store.driver_connect``'s arguments), set up as every store's is."""
    conn: sqlite3.Connection = sqlite3.connect(*args, **kwargs)
    try:
        for pragma in SQLITE_PRAGMAS:  # the first read of the file: one that is not a database fails here
            conn.execute(pragma)
    except BaseException:
        conn.close()  # now, not when a traceback that holds it is collected
        raise
    return conn


class Connections:
    """This process's ``sqlite3`` connections to one store file; each is one thread's while it holds it.

    A connection is made when none is free, and kept for the next caller:
    a store's reads and writes come from a few threads (the user's, the
    manager, a heartbeat), so a few connections serve them all. A process
    forked with connections leaves them to its parent and makes its own:
    it keeps them, unused and unclosed (SQLite says a connection carried
    across ``fork`` must not be used, and closing one runs SQLite's code
    on the parent's locks and files).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._free: List[sqlite3.Connection] = []
        self._inherited: List[sqlite3.Connection] = []  # the parent's: never used, nor collected (which closes)
        self._pid = os.getpid()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of this process's, for the caller's thread until the block ends."""
        if self._pid != os.getpid():  # inherited across fork: the parent's, never to be used (or closed) here
            self._inherited += self._free
            self._free, self._pid = [], os.getpid()
        try:
            conn = self._free.pop()  # atomic under the GIL: no two threads get one connection
        except IndexError:
            conn = connect(self.path)
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (a full disk): a ROLLBACK would fail
                with contextlib.suppress(sqlite3.Error):
                    conn.rollback()
            raise
        finally:
            if self._pid == os.getpid():
                self._free.append(conn)

    def close(self) -> None:
        """Close this process's free connections; one in use is closed by the next ``close``, or dropped."""
        free, self._free = self._free, []
        if self._pid == os.getpid():
            while free:  # one at a time: a thread that took the list before the swap may pop from it too
                free.pop().close()


def prepare(conn: sqlite3.Connection, create: bool) -> Optional[int]:
    """``SCHEMA_VERSION`` if ``conn``'s file holds a current store (made first in an empty database, with ``create``).

    ``None`` where there is more to do, or to say, than this knows:
    another version's schema, some of the tables only, other columns,
    another application's tables. ``Store`` then opens the file with
    SQLAlchemy, which upgrades it or says what it is. A store is made in
    one ``BEGIN IMMEDIATE`` transaction, so two processes making one file
    at the same moment take turns, and each sees all of it or none.
    """
    if create and not _tables(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _tables(conn):  # still none, now that this connection holds the lock
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {META} (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
    if _tables(conn) != set(_TABLES):
        return None
    found = conn.execute(f"SELECT value FROM {META} WHERE name = 'schema'").fetchone()
    if found is None or found[0] != str(SCHEMA_VERSION) or _columns(conn) != _expected_columns():
        return None
    if create:  # the file's own mode, outside any transaction: readers never wait for the writer
        _into_wal(conn)
    return SCHEMA_VERSION


def _into_wal(conn: sqlite3.Connection) -> None:
    """Put ``conn``'s file in WAL mode if it is not yet.

    The change takes the file's exclusive lock; two processes that ask for
    it at one moment (both holding a read lock) make SQLite refuse one at
    once, "database is locked", without the busy timeout's wait (4 rounds
    in 60 of four processes making one store did): it asks again. Every
    attempt waits only what is left of one ``BUSY_TIMEOUT``, so the whole
    waits no longer than that; then the connection's own timeout is back.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    (own,) = conn.execute("PRAGMA busy_timeout").fetchone()
    try:
        while True:
            left = deadline - time.monotonic()
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(left * 1000))}")
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or left <= 0:
                    raise
                time.sleep(0.005)
    finally:
        with contextlib.suppress(sqlite3.Error):  # a closed connection: the error that closed it says more
            conn.execute(f"PRAGMA busy_timeout = {int(own)}")


def _tables(conn: sqlite3.Connection) -> Set[str]:
    names = ", ".join(f"'{name}'" for name in _TABLES)
    found = conn.execute(f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({names})")
    return {name for (name,) in found}


def _columns(conn: sqlite3.Connection) -> Dict[str, Set[str]]:
    return {table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")} for table in _TABLES}


@functools.cache
def _expected_columns() -> Dict[str, Set[str]]:
    """The columns of ``SCHEMA``'s tables, as SQLite reads them: made once, in memory."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        return _columns(conn)
