"""The state store: every task's state, progress, abort request and result.

One table row per task. Writers never read-modify-write: every write is an
upsert (``INSERT ... ON CONFLICT DO UPDATE``), batched by the caller, whose
``WHERE`` clause keeps a final state final. The abort request is its own
column, ``abort_requested_at``; state writes never touch it, so no later
write (STARTED, progress, the task's return) can undo an abort.

Two ways in, one SQL. An SQLite file is opened with ``sqlite3``
(``_sqlite``: its connections, a new store's schema, a current one's
check), and what an executor, a listing or a watcher does most runs there
as text on a DB-API cursor: the group commit (``_sql``'s ``sync`` and
``write``, which the recorder runs too), the executors' rows
(``_registry``), the listings (``_listing``), the abort poll, an abort
asked by id. SQLAlchemy is imported for the rest, written in its Core (a
key's holder, an older schema's upgrade, a dead executor's recovery, a
Celery worker's start), and for PostgreSQL, whose every statement goes
through its engine: an executor on an SQLite file never imports it, and
has its first result in 46 ms instead of 170 (fork; 81 instead of 190
under spawn).

Each process gets its own engine and its own ``sqlite3`` connections, made
on first use in that process: those inherited across ``fork`` are dropped
unclosed, as SQLAlchemy's pooling guide says. That is one case of the
package's rule: nothing module-level crosses ``fork()`` (``Store.open``'s
cache may, as its handles make new connections in each process; the
executor and task registries are cleared by at-fork hooks in their
modules). SQLite runs in WAL mode (readers never block the writer) with a
long busy timeout, so concurrent writers wait instead of failing with
"database is locked".

Results are pickles: a store is as trusted as code. A new SQLite file is
created owner-only (0600).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ._errors import StoreError, UnknownTask
from ._listen import ANY, CHANNEL, Listener, listener, payload
from ._listing import Listing
from ._outcome import dump, unrun
from ._procs import asker
from ._record import TaskRecord, record
from ._registry import Registry
from ._sql import (
    ABORTING,
    BUSY_TIMEOUT,
    CLAIMABLE,
    LOG_UPSERT,
    LOGS,
    SCHEMA_VERSION,
    SQLITE_CONNECT,
    SQLITE_PRAGMAS,
    STANDING,
    TASKS,
    UNFINISHED,
    existing_file,
    pieces,
    reason,
    sync,
    write,
)  # fmt: skip
from ._sqlite import Connections, prepare
from ._states import ABORTED, FAILURE, PENDING, READY_STATES, RETRY, STARTED, SUCCESS, UNREADY_STATES

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["Store", "TaskRecord", "forget"]

#: Seconds between two looks for dead executors while a watcher waits on their tasks.
RECOVER_EVERY = 1.0

StoreSpec = Union[str, "os.PathLike[str]", "Store"]


class Store(Registry, Listing):
    """A handle on one state store, by SQLite path or SQLAlchemy URL.

    ``Store.open(spec)`` returns one shared handle per store and process.
    Only an opener that passes ``create=True`` (an ``Executor``, a Celery
    task) creates a store or its schema; every other opener needs an
    existing localabort store, and leaves any other file as it found it.
    Opening checks the store at once: a missing path or folder, a file that
    is not a localabort store, or one that cannot be written raises
    ``StoreError``, one line naming the path and the fix.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "doc.sqlite")
    >>> Store.open(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    localabort.StoreError: .../doc.sqlite: no such store (check the path; an Executor creates one)
    >>> Store.open(path, create=True).get("no-such-task") is None
    True
    """

    _open_stores: ClassVar[Dict[str, Store]] = {}

    def __init__(self, spec: Union[str, os.PathLike[str]], *, create: bool = True) -> None:
        self.url, self.path = _locate(os.fspath(spec))
        # A file named by its path (or a plain URL of it) is read and written with ``sqlite3`` (``_sqlite``).
        self._file = Connections(self.path) if self.path is not None and self.url == "sqlite:///" + self.path else None
        if self._file is not None:
            self.name = self._file.path
        else:
            from sqlalchemy.engine import make_url

            url = make_url(self.url)
            if url.get_backend_name() not in ("sqlite", "postgresql"):
                raise StoreError(f"{spec}: a store is an SQLite file or a PostgreSQL database, not {url.drivername}")
            # How messages name the store: its path, or its URL as given, less any password.
            self.name = self.path or (self.url if url.password is None else url.render_as_string(hide_password=True))
        self._engine: Optional[Engine] = None
        self._pid = -1
        self._identity: Optional[Tuple[int, int]] = None  # the file it opened (``open`` notices another)
        self._prepare(create)

    @classmethod
    def open(cls, spec: StoreSpec, *, create: bool = False) -> Store:
        """The one handle of this process on the store ``spec`` names; ``create`` makes a missing one."""
        if isinstance(spec, Store):
            return spec
        key = _locate(os.fspath(spec))[0]
        store = cls._open_stores.get(key)
        if store is not None and store.replaced():
            store.dispose()  # the file was deleted or replaced since: this handle is the old file's
            del cls._open_stores[key]
            store = None
        if store is None:
            store = cls._open_stores[key] = cls(key, create=create)
        elif create:  # an Executor checks the store each time, even one this process opened before
            if store.path is not None:
                store._guard()
            store._check(create=True)
        return store

    def replaced(self) -> bool:
        """Whether the store's file is gone, or another file has its path, since this handle opened it."""
        return self.path is not None and _identity(self.path) != self._identity

    def _guard(self) -> None:
        """Before an Executor writes a store file: no symbolic link, and no write access for others."""
        assert self.path is not None
        if os.path.islink(self.path):  # never create, or write, through a link
            raise StoreError(
                f"{self.path}: is a symbolic link (to {os.readlink(self.path)}); give an Executor the store's own path"
            )
        _owner_only(self.path)

    def __reduce__(self) -> Any:
        return (Store.open, (self.url,))

    def __repr__(self) -> str:
        return f"Store({self.name!r})"

    # -- engine ---------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """This process's engine; an engine inherited across fork is dropped unclosed."""
        pid = os.getpid()
        if self._pid != pid:
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._engine = self._make_engine()
            self._pid = pid
        assert self._engine is not None
        return self._engine

    def _make_engine(self) -> Engine:
        import sqlalchemy as sa  # here: the first use of SQLAlchemy in a process may be the engine's

        if self.postgres:
            try:
                return sa.create_engine(self.url, pool_pre_ping=True)
            except ImportError as exc:
                raise StoreError(
                    f"{self.name}: its database driver is not installed ({exc}); pip install 'localabort[postgresql]'"
                ) from None
        engine = sa.create_engine(self.url, connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS:
                cur.execute(pragma)
            cur.close()

        return engine

    def driver_connect(self) -> Optional[Tuple[List[Any], Dict[str, Any]]]:
        """How ``sqlite3.connect`` opens this SQLite store as this handle does: its arguments (``None``: not
        SQLite). The recorder writes through it without importing SQLAlchemy (``_sql``). A plain path is
        opened as an existing file (``mode=rw``): a store deleted meanwhile is an error, not a new empty file.
        """
        if self.postgres:
            return None
        if self._file is not None:
            return [existing_file(self._file.path)], {"uri": True, **SQLITE_CONNECT}
        from sqlalchemy.engine import make_url

        args, kwargs = self.engine.dialect.create_connect_args(make_url(self.url))
        args = list(args)
        if not kwargs.get("uri") and args and args[0] and args[0] != ":memory:":
            args[0], kwargs = existing_file(args[0]), {**kwargs, "uri": True}
        return args, {**kwargs, **SQLITE_CONNECT}

    def dispose(self) -> None:
        """Close this process's connections; the next use opens new ones."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        if self._file is not None:
            self._file.close()
        self._engine = None
        self._pid = -1

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A short write transaction; any database failure becomes a ``StoreError`` naming the store."""
        engine = self.engine
        import sqlalchemy as sa

        try:
            with engine.begin() as conn:
                yield conn
        except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:  # the cursor's own, unwrapped
            raise StoreError(f"{self.name}: cannot write the store ({reason(exc)})") from exc

    @contextlib.contextmanager
    def _one_statement(self) -> Iterator[Connection]:
        """A connection whose each statement commits by itself (autocommit); failures as ``_begin``'s."""
        engine = self.engine
        import sqlalchemy as sa

        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                yield conn
        except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
            raise StoreError(f"{self.name}: cannot write the store ({reason(exc)})") from exc

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection for reads; any database failure becomes a ``StoreError`` naming the store."""
        engine = self.engine
        import sqlalchemy as sa

        try:
            with engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.name}: cannot read the store ({reason(exc)})") from exc

    @contextlib.contextmanager
    def _autocommit(self) -> Iterator[Any]:
        """A DB-API cursor whose each statement commits as it runs; failures as ``_begin``'s."""
        if self._file is None:
            with self._one_statement() as conn:
                yield self._cursor(conn)
            return
        with self._file_cursor("write") as cursor:
            yield cursor

    @contextlib.contextmanager
    def _file_cursor(self, doing: str) -> Iterator[Any]:
        """A cursor on one of this handle's ``sqlite3`` connections; a failure is a ``StoreError``: "cannot {doing}"."""
        assert self._file is not None
        try:
            with self._file.connection() as conn:
                cursor = conn.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.name}: cannot {doing} the store ({reason(exc)})") from exc

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Any]:
        """A DB-API cursor in a short write transaction (``_sql``'s statements); failures as ``_begin``'s.

        On an SQLite file, a ``BEGIN IMMEDIATE`` on a ``sqlite3`` connection
        of its own: the write lock is taken first, so a transaction that
        reads before it writes never finds its snapshot stale.
        """
        if self._file is None:
            with self._begin() as conn:
                yield self._cursor(conn)
            return
        with self._file_cursor("write") as cursor:
            cursor.execute("BEGIN IMMEDIATE")  # a failed block's rollback is the connection's (``_sqlite``)
            yield cursor
            cursor.execute("COMMIT")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        """A DB-API cursor for reads (``Listing``'s SQL); failures as ``_connect``'s."""
        if self._file is not None:
            with self._file_cursor("read") as cursor:
                yield cursor
            return
        engine = self.engine
        import sqlalchemy as sa

        try:
            with engine.connect() as conn:
                cursor = self._cursor(conn)
                try:
                    yield cursor
                finally:
                    cursor.close()
        except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
            raise StoreError(f"{self.name}: cannot read the store ({reason(exc)})") from exc

    def _prepare(self, create: bool) -> None:
        """Check the store; with ``create``, first make its file (0600) and schema if missing.

        An open that fails leaves the file as it was: a database with
        tables of its own gets localabort's only once they are known to be
        missing, not different (``_foreign``), and WAL only once its schema
        is in place.
        """
        made = False
        if self.path is not None:
            if os.path.isdir(self.path):
                raise StoreError(f"{self.path}: is a folder; name a file in it, such as {self.path}/store.sqlite")
            folder = os.path.dirname(self.path)
            if create:
                self._guard()
            if not os.path.exists(self.path):
                if not create:
                    raise StoreError(f"{self.path}: no such store (check the path; an Executor creates one)")
                if not os.path.isdir(folder):
                    raise StoreError(f"{self.path}: folder {folder} does not exist; create it first")
                try:
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                    made = True
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot create the store ({exc.strerror})") from None
        try:
            self._check(create)
        except BaseException:
            self.dispose()
            if made:  # an open that fails leaves nothing behind, not even the file it began
                for name in (self.path, f"{self.path}-wal", f"{self.path}-shm", f"{self.path}-journal"):
                    with contextlib.suppress(OSError):
                        os.unlink(name)  # type: ignore[arg-type]
            raise
        self._identity = _identity(self.path)
        self.recover_dead_executors()

    def _check(self, create: bool) -> None:
        """The schema check of ``_prepare``: a localabort store this localabort reads (made, with ``create``).

        A current store file, or a new one, is checked (or made) with
        ``sqlite3`` alone (``_sqlite.prepare``); anything else with SQLAlchemy,
        which upgrades an older schema and says what any other file is.
        """
        if self._file is not None:
            try:
                with self._file.connection() as conn:
                    if prepare(conn, create) is not None:
                        return
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):  # waited the busy timeout already: not again, through SQLAlchemy
                    raise StoreError(f"{self.name}: cannot open as a localabort store ({reason(exc)})") from None
            except sqlite3.Error:
                pass  # a file that is not a database, say: said below, in the words every other opener uses
        import sqlalchemy as sa

        try:
            found = self._schema_version(create)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.name}: cannot open as a localabort store ({reason(exc)})") from None
        if found is None:
            empty = self.path is not None and os.path.getsize(self.path) == 0
            what = "is an empty file" if empty else "is a database, but not a localabort store"
            raise StoreError(f"{self.name}: {what} (an Executor creates a store; check the path)")
        if int(found) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.name}: written by a newer localabort (schema {found}, this one reads "
                f"{SCHEMA_VERSION}); upgrade localabort"
            )

    def _schema_version(self, create: bool) -> Optional[str]:
        """The schema version the store records; ``None`` if it has no localabort schema.

        With ``create``, the schema is made first, or an older one upgraded,
        in one transaction; two processes making or upgrading one store at
        the same moment both succeed (the loser of the race finds the
        winner's work and tries again). Without it, an older schema is an error.
        """
        import sqlalchemy as sa

        from ._schema import MIGRATIONS, conditions_for, meta, metadata

        if create:
            conditions_for(self.engine.dialect.name)
        for attempt in range(5):
            try:
                with self._schema_transaction(create) as conn:
                    if create:
                        if _foreign(conn):
                            return None  # as a reader finds it: "not a localabort store", and nothing written
                        metadata.create_all(conn)
                    elif not sa.inspect(conn).has_table(meta.name):  # a read: it adds nothing to the file
                        return None
                    found = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema")).scalar()
                    if create and found is None:
                        conn.execute(meta.insert().values(name="schema", value=str(SCHEMA_VERSION)))
                        found = SCHEMA_VERSION
                    elif found is not None and int(found) < SCHEMA_VERSION:
                        if not create:
                            raise StoreError(
                                f"{self.name}: made by an older localabort (schema {found}, this one reads "
                                f"{SCHEMA_VERSION}); open it once with an Executor, which upgrades it"
                            )
                        for version in range(int(found), SCHEMA_VERSION):
                            MIGRATIONS[version](conn)
                        conn.execute(meta.update().where(meta.c.name == "schema").values(value=str(SCHEMA_VERSION)))
                        found = SCHEMA_VERSION
                if create and self.path is not None and found is not None:  # outside a transaction; the file keeps it
                    with self.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                return None if found is None else str(found)
            except sa.exc.SQLAlchemyError as exc:
                raced = any(word in str(exc) for word in ("already exists", "duplicate", "locked", "UNIQUE"))
                if not create or attempt == 4 or not raced:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _schema_transaction(self, create: bool) -> Iterator[Connection]:
        """The transaction that reads, makes or upgrades the schema; on SQLite, with ``create``, it takes the lock.

        pysqlite commits each ``CREATE TABLE`` as it goes: without
        ``BEGIN IMMEDIATE`` another process could read the tables half made
        and take the file for another application's. With it, creators
        take turns (the busy timeout), and each sees all of a store or none.
        """
        if not (create and self.engine.dialect.name == "sqlite"):
            with self.engine.begin() as conn:
                yield conn
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    # -- writes ---------------------------------------------------------------

    # The writes an executor makes at every group commit run on a DB-API cursor (``_writing``: this
    # handle's own ``sqlite3`` connection, or SQLAlchemy's on PostgreSQL), with SQL written once in ``_sql``
    # (SQLite and PostgreSQL share it, and so does the recorder): through SQLAlchemy Core each row and
    # statement cost ten times as much, and the store's write is the executor's hot path.

    @property
    def _one_file(self) -> bool:
        return self._file is not None

    @property
    def postgres(self) -> bool:
        """Whether the store is a PostgreSQL database (else an SQLite file)."""
        return not self.url.startswith("sqlite")

    def _cursor(self, conn: Connection) -> Any:
        return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def write(self, rows: Sequence[Dict[str, Any]], aborts: Sequence[Dict[str, Any]] = ()) -> None:
        """Write task rows and abort requests in one short transaction.

        ``rows`` hold ``id`` and every column of ``STATE_COLUMNS``; a row
        already in a final state is left as it is. A row may also hold its
        task's ``log``, ``(text, dropped)``, which replaces the one stored. ``aborts`` are full rows
        with ``abort_requested_at`` set, for tasks whose row may not exist
        yet; on an existing row only the request is written.
        """
        if not rows and not aborts:
            return
        with self._writing() as cur:
            write(cur, self.postgres, rows, aborts)

    def sync(
        self, executor_id: str, rows: Sequence[Dict[str, Any]], aborts: Sequence[Dict[str, Any]], *,
        claims: Sequence[Tuple[str, str, Optional[str]]], flushed_at: Optional[float] = None,
    ) -> Tuple[List[str], Dict[str, str]]:  # fmt: skip
        """An executor's write: its rows and abort requests, then the aborts it must honour, in one transaction.

        ``claims`` are the ``(id, name, key)`` of the tasks to claim (PENDING
        to RECEIVED) before any worker may start them; a claim without a key
        whose row is among ``rows``, written RECEIVED, is made by that row. Returns the ids among
        them with an abort requested, and those whose claim was refused, with
        the task that holds them: another task holding their key (RECEIVED
        or STARTED), or the id itself, when another executor's row has it
        (two processes submitted one id at the same moment; the one whose
        row landed first has it). Neither may run.
        The read follows the writes inside one write transaction: an abort
        recorded before the claim is in the answer, and one recorded after
        finds the task claimed, and reaches it through the executor's poll
        (``aborts_requested``). ``flushed_at`` records that every task the
        executor handed out before it now has its row (``None``: this write
        does not say, as a claim from a user thread does not; it must then
        write a row, which takes the lock as that would).
        """
        with self._writing() as cur:
            return sync(cur, self.postgres, executor_id, rows, aborts, claims, flushed_at)

    def request_abort(
        self, task_id: str, terminate_after: Optional[float] = None, *, by: Optional[str] = None
    ) -> Optional[str]:
        """Ask the task ``task_id`` to abort, from any process; return its state then, or ``None`` if finished.

        ``terminate_after`` (seconds) also asks its executor to kill the
        task's worker if the task still runs that long after now (``0``: at
        once); the earliest such time asked is kept. ``by`` says who asks
        (default: this process, by pid and host); the first asker is kept.

        The state is read in the transaction that records the request: a
        task aborted PENDING never runs; one RECEIVED ends unrun unless its
        worker started it first; one STARTED is asked. An id whose row is
        not written yet (an executor writes it within milliseconds of
        ``submit()``) gets a *standing abort*, which that row keeps when it
        lands, so the task never runs; the call waits for the row (see
        ``lookup``) and answers PENDING. An id no executor handed out raises
        ``UnknownTask``, and leaves nothing behind.
        """
        now = time.time()
        at = _deadline(now, terminate_after)
        params = {"id": task_id, "now": now, "by": by or asker(), "at": at}
        # One statement: the request, the state it met, and (PostgreSQL) its notification, sent at the commit.
        ask = _ASK.format(deadline=_ASK_DEADLINE if at is not None else "")
        if self.postgres:
            ask += ", pg_notify(:channel, :payload) AS notified"
            params.update(channel=CHANNEL, payload=payload(task_id, at))
        ask = self._sql(ask)
        # The common case, a task whose row is there and unfinished: that statement alone, committed as it
        # runs (no BEGIN and COMMIT to wait for: the abort reaches a worker a round trip or two sooner).
        with self._autocommit() as cur:
            cur.execute(ask, params)
            asked = cur.fetchall()
        if asked:  # the statement held the row: its state is the one the request met
            return str(asked[0][0])
        with self._writing() as cur:  # no such row, or finished, or a standing abort: asked again, in one transaction
            cur.execute(ask, params)
            asked = cur.fetchall()
            if asked:  # its row landed in between
                return str(asked[0][0])
            cur.execute(self._sql(f"SELECT name, state FROM {TASKS} WHERE id = :id"), {"id": task_id})
            found = cur.fetchone()
            if found is not None and found[0] != STANDING and found[1] in UNREADY_STATES:
                cur.execute(ask, params)  # committed after the UPDATE above (PostgreSQL's read committed)
                asked = cur.fetchall()
                return str(asked[0][0]) if asked else None
            if found is not None and found[0] != STANDING:
                return None  # finished
            if found is None:
                cur.execute(self._sql(_STANDING_ABORT), params)
        try:
            self.lookup(task_id, since=now)
        except UnknownTask:
            with self._writing() as cur:
                cur.execute(self._sql(f"DELETE FROM {TASKS} WHERE id = :id AND name = '{STANDING}'"), {"id": task_id})
                gone = cur.rowcount
            if gone:
                raise
        return PENDING  # its row landed on the standing abort: it never runs

    def request_abort_all(
        self, terminate_after: Optional[float] = None, *, by: Optional[str] = None, executor_id: Optional[str] = None
    ) -> List[str]:
        """Ask every unfinished task in the store (or of one executor) to abort (see ``request_abort``).

        Returns the ids newly asked.
        """
        import sqlalchemy as sa

        from ._schema import tasks

        now = time.time()
        unfinished = sa.and_(sa.text(UNFINISHED), tasks.c.name != STANDING)
        if executor_id is not None:
            unfinished = sa.and_(unfinished, tasks.c.executor_id == executor_id)
        asked = unfinished & tasks.c.abort_requested_at.is_(None)
        with self._begin() as conn:
            ids = list(
                conn.execute(
                    tasks.update()
                    .where(asked)
                    .values(abort_requested_at=now, abort_by=by or asker())
                    .returning(tasks.c.id)
                ).scalars()
            )
            if terminate_after is not None:  # asked before or not, each gets the earlier deadline
                conn.execute(tasks.update().where(unfinished).values(self._abort_values(now, terminate_after, by)))
            for notice in self._notice(ANY):
                conn.execute(sa.select(notice))
        return ids

    def _notice(self, task_id: str, terminate_at: Optional[float] = None) -> List[Any]:
        """The SQL that tells the processes watching tasks (``_watch``) of an abort when its transaction commits.

        On PostgreSQL, ``pg_notify`` with ``payload(task_id, terminate_at)``:
        ``task_id`` is ``ANY`` for any number of tasks, ``terminate_at`` the
        deadline this request asked (the row keeps the earliest asked). On
        SQLite, nothing: the watchers poll.
        """
        import sqlalchemy as sa

        if not self.postgres:
            return []
        return [sa.func.pg_notify(CHANNEL, payload(task_id, terminate_at)).label("notified")]

    def _abort_values(self, now: float, terminate_after: Optional[float], by: Optional[str]) -> Dict[str, Any]:
        """The columns an abort request sets on a task's row: the first request and asker, the earliest deadline."""
        import sqlalchemy as sa

        from ._schema import tasks

        values: Dict[str, Any] = {
            "abort_requested_at": sa.func.coalesce(tasks.c.abort_requested_at, now),
            "abort_by": sa.func.coalesce(tasks.c.abort_by, by or asker()),
        }
        at = _deadline(now, terminate_after)
        if at is not None:
            earlier = sa.func.least if self.postgres else sa.func.min
            values["terminate_at"] = earlier(sa.func.coalesce(tasks.c.terminate_at, at), at)
        return values

    def lookup(self, task_id: str, *, since: Optional[float] = None) -> TaskRecord:
        """The task ``task_id``; an id not in the store raises ``UnknownTask`` once no executor can hold it.

        An executor records its new tasks' rows within milliseconds, and
        with them the time before which every id it handed out is written
        (``flushed_at``, renewed every ``HEARTBEAT`` s). So an id asked
        about at ``since`` (default: now) that has no row is waited for until
        every live executor has written past ``since``, or has been silent
        for ``SILENT`` s: only then is it unknown.
        """
        since = time.time() if since is None else since
        pause = 0.001
        while True:
            found = self.get(task_id)
            if found is not None:
                return found
            if self._written_since(since):
                found = self.get(task_id)  # it may have landed with that very write
                if found is not None:
                    return found
                raise UnknownTask(f"no task {task_id} in {self.name}")
            time.sleep(pause)
            pause = min(2 * pause, 0.05)

    def abort_unstarted(self, task_id: str, owner: str) -> bool:
        """End ``task_id`` ABORTED if it is still PENDING (or waiting to retry) under ``owner``; return whether it was.

        The opposite of ``start``: of an abort and a start racing for one
        task, the database lets exactly one win, so a task aborted before
        it started never runs.
        """
        from ._schema import end_tasks, tasks

        ended = 0
        with self._begin() as conn:
            for state, exc in (
                (PENDING, unrun(task_id)),
                (RETRY, unrun(task_id, waiting=True)),
            ):
                mine = (tasks.c.id == task_id, tasks.c.state == state, tasks.c.executor_id == owner)
                ended += conn.execute(end_tasks(*mine, state=ABORTED, exc=exc)).rowcount
        return bool(ended)

    def start(self, row: Dict[str, Any]) -> str:
        """Move the task of ``row`` (a STARTED row) from PENDING to STARTED, unless it was aborted (a Celery worker's).

        Returns STARTED if the caller may run it, ABORTED if it must not (the
        task is stored ABORTED), or the final state of a task that finished
        already. ``row`` gets the task's stored ``submitted_at`` and ``key``,
        and its ``retries`` if more. A task the store does not know (sent
        without a PENDING row) is recorded STARTED. One STARTED and not
        aborted was delivered again (``acks_late``, its process lost): it may
        run again, and its row says so, one more in ``retries``.
        """
        import sqlalchemy as sa

        from ._schema import tasks

        task_id = row["id"]
        with self._begin() as conn:
            started = conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, sa.text(CLAIMABLE), tasks.c.abort_requested_at.is_(None))
                .values(state=STARTED, started_at=row["started_at"], executor_id=row["executor_id"])
            ).rowcount
            query = sa.select(
                tasks.c.state, tasks.c.abort_requested_at, tasks.c.submitted_at, tasks.c.key, tasks.c.retries
            )
            found = conn.execute(query.where(tasks.c.id == task_id)).first()
            again = False
            if not started and found is not None and found.state == STARTED and found.abort_requested_at is None:
                count = (found.retries or 0) + 1
                # Only if still so: on PostgreSQL the first run may have ended since the read.
                redelivered = (
                    tasks.update()
                    .where(tasks.c.id == task_id, tasks.c.state == STARTED, tasks.c.abort_requested_at.is_(None))
                    .values(retries=count, started_at=row["started_at"], executor_id=row["executor_id"])
                )
                again = bool(conn.execute(redelivered).rowcount)
                if again:
                    row["retries"] = count
                else:
                    found = conn.execute(query.where(tasks.c.id == task_id)).first()
        if found is None:  # sent without a PENDING row (Celery's send_task, say): record it now, submitted as it starts
            row["submitted_at"] = row["submitted_at"] or row["started_at"]
            self.write([row])
            return STARTED
        row.update(submitted_at=found.submitted_at, key=found.key, retries=max(row["retries"] or 0, found.retries or 0))
        if started or again:
            return STARTED
        if found.state in UNREADY_STATES:  # aborted in the instant before the start
            self.write([dict(row, state=ABORTED, finished_at=time.time(), result=dump(unrun(task_id)))])
            return ABORTED
        return str(found.state)

    def end_lost(self, task_id: str, exc: BaseException) -> bool:
        """End ``task_id`` FAILURE with ``exc`` if it is unfinished (its process died); return whether it was."""
        import sqlalchemy as sa

        from ._schema import end_tasks, tasks

        with self._begin() as conn:
            return bool(
                conn.execute(end_tasks(tasks.c.id == task_id, sa.text(UNFINISHED), state=FAILURE, exc=exc)).rowcount
            )

    # -- reads ----------------------------------------------------------------

    def write_log(self, task_id: str, log: Tuple[str, int]) -> None:
        """Store task ``task_id``'s log so far, ``(text, dropped)``, in place of the one stored."""
        with self._writing() as cur:
            cur.execute(self._sql(LOG_UPSERT), {"task_id": task_id, "text": log[0], "dropped": log[1]})

    def log(self, task_id: str) -> Optional[Tuple[str, int]]:
        """Task ``task_id``'s log: the last bytes of what it printed and logged, and how many came before them.

        ``None`` if it has logged nothing (or is unknown). The log of a
        running task is as its worker last sent it (every half second).
        """
        with self._reading() as cur:
            cur.execute(self._sql(f"SELECT text, dropped FROM {LOGS} WHERE task_id = :id"), {"id": task_id})
            row = cur.fetchone()
        return None if row is None else (row[0], int(row[1]))

    def is_abort_requested(self, task_id: str) -> bool:
        """Whether an abort was ever requested for ``task_id``."""
        with self._reading() as cur:
            cur.execute(self._sql(f"SELECT abort_requested_at FROM {TASKS} WHERE id = :id"), {"id": task_id})
            row = cur.fetchone()
        return row is not None and row[0] is not None

    def aborts_requested(self, executor_id: str) -> Dict[str, Optional[float]]:
        """``executor_id``'s unfinished tasks with an abort requested: their ids, and when to kill their workers."""
        # SQLite, with no statistics, may take the index of every unfinished task instead: tens of thousands queued.
        indexed = "" if self.postgres else "INDEXED BY ix_localabort_tasks_aborting"
        with self._reading() as cur:
            cur.execute(self._sql(_ABORTING_OF.format(indexed=indexed)), {"id": executor_id})
            return {task_id: terminate_at for task_id, terminate_at in cur.fetchall()}

    def find_key(self, name: str, key: str) -> Optional[TaskRecord]:
        """What holds the work of ``name`` under ``key``: an unfinished task, else its newest SUCCESS, or ``None``."""
        import sqlalchemy as sa

        from ._schema import tasks

        keyed = sa.select(tasks).where(tasks.c.name == name, tasks.c.key == key)
        with self._connect() as conn:
            row = conn.execute(keyed.where(sa.text(UNFINISHED)).order_by(tasks.c.submitted_at).limit(1)).first()
            if row is None:
                done = keyed.where(tasks.c.state == SUCCESS).order_by(tasks.c.finished_at.desc()).limit(1)
                row = conn.execute(done).first()
        return None if row is None else record(row)

    def listener(self) -> Optional[Listener]:
        """A connection that hears of abort requests as they are committed (``_listen``), or ``None`` (SQLite)."""
        if not self.postgres:
            return None
        from sqlalchemy.engine import make_url

        return listener(make_url(self.url))

    def aborting(self, ids: Sequence[str]) -> Dict[str, Optional[float]]:
        """Which of the tasks ``ids`` have an abort requested, each with its ``terminate_at``: one read for all."""
        import sqlalchemy as sa

        from ._schema import tasks

        found: Dict[str, Optional[float]] = {}
        with self._connect() as conn:
            for piece in pieces(list(ids)):
                query = sa.select(tasks.c.id, tasks.c.terminate_at).where(
                    tasks.c.id.in_(piece), tasks.c.abort_requested_at.is_not(None)
                )
                found.update((task_id, None if at is None else float(at)) for task_id, at in conn.execute(query))
        return found

    # -- deletes --------------------------------------------------------------

    def forget(self, older_than: float) -> int:
        """Delete finished tasks that finished more than ``older_than`` seconds ago; return how many."""
        import sqlalchemy as sa

        from ._schema import executors, logs, tasks

        cutoff = time.time() - older_than
        old = (tasks.c.state.in_(sorted(READY_STATES)), tasks.c.finished_at < cutoff)
        with self._begin() as conn:
            conn.execute(logs.delete().where(logs.c.task_id.in_(sa.select(tasks.c.id).where(*old))))
            done = conn.execute(tasks.delete().where(*old)).rowcount
            conn.execute(executors.delete().where(executors.c.closed_at < cutoff))
        return int(done)


def forget(store: StoreSpec, *, older_than: float) -> int:
    """Delete the tasks of ``store`` that finished more than ``older_than`` seconds ago; return how many.

    Unfinished tasks are never touched. The command line does the same:
    ``localabort forget STORE --older-than 7d``.

    >>> import os, tempfile
    >>> from localabort import Executor
    >>> path = os.path.join(tempfile.mkdtemp(), "s.sqlite")
    >>> Executor(max_workers=1, store=path).shutdown()
    >>> forget(path, older_than=7 * 86400)
    0
    """
    return Store.open(store).forget(older_than)


#: An abort request on an unfinished task's row (``Store.request_abort``): the first asker and request are
#: kept, and the earliest deadline (``{deadline}``, when this one asks for one); it returns the state it met.
_ASK = (
    f"UPDATE {TASKS} SET abort_requested_at = COALESCE(abort_requested_at, :now), "
    f"abort_by = COALESCE(abort_by, :by){{deadline}} "
    f"WHERE id = :id AND name != '{STANDING}' AND {UNFINISHED} RETURNING state"
)
_ASK_DEADLINE = ", terminate_at = LEAST(COALESCE(terminate_at, :at), :at)"
#: A standing abort: the request for an id whose row is not written yet, which that row keeps when it lands.
_STANDING_ABORT = (
    f"INSERT INTO {TASKS} (id, name, state, abort_requested_at, abort_by, terminate_at) "
    f"VALUES (:id, '{STANDING}', '{PENDING}', :now, :by, :at)"
)
_ABORTING_OF = f"SELECT id, terminate_at FROM {TASKS} {{indexed}} WHERE executor_id = :id AND {ABORTING}"


def _owner_only(path: str) -> None:
    """Take write access away from others on a store file (and its WAL files); refuse one that is not ours.

    A store holds pickled results: whoever can write it runs code in every
    process that reads it, so it is as trusted as code (docs/store.md).
    """
    for name in (path, path + "-wal", path + "-shm"):
        try:
            info = os.stat(name)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o022:
            continue
        if info.st_uid != os.getuid():
            raise StoreError(
                f"{name}: writable by others and not yours (mode {mode:04o}); a store is as trusted as code: "
                "use one only you can write"
            )
        os.chmod(name, mode & ~0o022)
        warnings.warn(
            f"localabort: {name} was writable by others (mode {mode:04o}); made it {mode & ~0o022:04o}, as a "
            "store is as trusted as code",
            stacklevel=2,
        )


def _deadline(now: float, terminate_after: Optional[float]) -> Optional[float]:
    """When a task's worker is to be killed, for an abort asked at ``now`` with ``terminate_after``."""
    return None if terminate_after is None else now + max(0.0, terminate_after)


def _locate(spec: str) -> Tuple[str, Optional[str]]:
    """The SQLAlchemy URL of the store ``spec`` names, and its file's absolute path if it is an SQLite file.

    ``spec`` is a path (``~`` expanded, relative to the current folder) or a
    URL; a plain ``sqlite:///`` URL names a file the same way, so
    ``sqlite:///rel.sqlite`` is ``rel.sqlite`` here. A URI one
    (``?uri=true``) names it its own way.
    """
    plain = spec[len("sqlite:///") :] if spec.startswith("sqlite:///") and not set("?#%") & set(spec) else None
    if "://" not in spec or (plain and plain != ":memory:"):
        path = os.path.abspath(os.path.expanduser(plain or spec))
        return "sqlite:///" + path, path
    from sqlalchemy.engine import make_url

    url = make_url(spec)
    if url.get_backend_name() != "sqlite" or "uri" in url.query or not url.database or url.database == ":memory:":
        return spec, None
    path = os.path.abspath(os.path.expanduser(url.database))
    return url.set(database=path).render_as_string(hide_password=False), path


def _foreign(conn: Connection) -> bool:
    """Whether the database holds tables of localabort's names that a store's are not; read before any write.

    A database with none of them (an application's, shared as Celery's
    database backend shares one) gets them. One that has some, but no
    schema version, or not a current store's columns, was made by
    something else, and is left as it is. (An older store's columns are
    the migrations' to change.)
    """
    import sqlalchemy as sa

    from ._schema import meta, metadata

    inspector = sa.inspect(conn)
    found = {table.name for table in metadata.sorted_tables if inspector.has_table(table.name)}
    if not found:
        return False
    version = (
        conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema")).scalar() if meta.name in found else None
    )
    if version is None:
        return True
    if str(version) != str(SCHEMA_VERSION):
        return False
    return any(
        {column["name"] for column in inspector.get_columns(table.name)} != {column.name for column in table.columns}
        for table in metadata.sorted_tables
        if table.name in found
    ) or found != {table.name for table in metadata.sorted_tables}


def _identity(path: Optional[str]) -> Optional[Tuple[int, int]]:
    """Which file ``path`` is now (device and inode), or ``None`` for a database server or a missing file."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


# Public as ``localabort.<name>``: reprs, pickles and the docs name the package, not this module.
# Doctest looks for examples in the module an object's ``__module__`` names: ``__test__`` points it here.
__test__ = {public.__name__: public for public in (forget,)}
for _public in __test__.values():
    _public.__module__ = "localabort"
del _public
