"""The state store: every task's state, progress, abort request and result.

One table row per task. Writers never read-modify-write: every write is an
upsert (``INSERT ... ON CONFLICT DO UPDATE``), batched by the caller, whose
``WHERE`` clause keeps a final state final. The abort request is its own
column, ``abort_requested_at``; state writes never touch it, so no later
write (STARTED, progress, the task's return) can undo an abort.

Each process gets its own SQLAlchemy engine, made on first use in that
process: an engine inherited across ``fork`` is dropped unclosed, as
SQLAlchemy's pooling guide says. That is one case of the package's rule:
nothing module-level crosses ``fork()`` (``Store.open``'s cache may, as its
handles make a new engine in each process; the executor and task
registries are cleared by at-fork hooks in their modules). SQLite runs in WAL mode (readers never
block the writer) with a long busy timeout, so concurrent writers wait
instead of failing with "database is locked".

Results are pickles: a store is as trusted as code. A new SQLite file is
created owner-only (0600).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from typing import Any, ClassVar, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from ._errors import StoreError, WorkerLost
from ._outcome import dump, unrun
from ._procs import alive, process_start
from ._schema import SCHEMA_VERSION, STATE_COLUMNS, UNFINISHED, TaskRecord, executors, meta, metadata, record, tasks
from ._states import ABORTED, FAILURE, PENDING, READY_STATES, STARTED, SUCCESS, UNREADY_STATES

__all__ = ["Store", "TaskRecord", "forget"]

#: Seconds a writer waits for the SQLite lock before it fails.
BUSY_TIMEOUT = 60.0
#: Task ids one query asks about at most.
ID_BATCH = 5000

StoreSpec = Union[str, "os.PathLike[str]", "Store"]


class Store:
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
        url = make_url(self.url)
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"{spec}: a store is an SQLite file or a PostgreSQL database, not {url.drivername}")
        # How messages name the store: its path, or its URL as given, less any password.
        self.name = self.path or (self.url if url.password is None else url.render_as_string(hide_password=True))
        self._engine: Optional[Engine] = None
        self._pid = -1
        self._statements: Dict[bool, Any] = {}  # built once: building an upsert costs more than running it
        self._prepare(create)

    @classmethod
    def open(cls, spec: StoreSpec, *, create: bool = False) -> Store:
        """The one handle of this process on the store ``spec`` names; ``create`` makes a missing one."""
        if isinstance(spec, Store):
            return spec
        key = _locate(os.fspath(spec))[0]
        store = cls._open_stores.get(key)
        if store is None:
            store = cls._open_stores[key] = cls(key, create=create)
        return store

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
        if not self.url.startswith("sqlite"):
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
            cur.execute("PRAGMA synchronous=NORMAL")  # per connection; WAL is the file's own, set at creation
            cur.close()

        return engine

    def dispose(self) -> None:
        """Close this process's connections; the next use opens new ones."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None
        self._pid = -1

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A short write transaction; any database failure becomes a ``StoreError`` naming the store."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.name}: cannot write the store ({_reason(exc)})") from exc

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection for reads; any database failure becomes a ``StoreError`` naming the store."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.name}: cannot read the store ({_reason(exc)})") from exc

    def _prepare(self, create: bool) -> None:
        """Check the store; with ``create``, first make its file (0600) and schema if missing."""
        if self.path is not None:
            if os.path.isdir(self.path):
                raise StoreError(f"{self.path}: is a folder; name a file in it, such as {self.path}/store.sqlite")
            folder = os.path.dirname(self.path)
            if not os.path.exists(self.path):
                if not create:
                    raise StoreError(f"{self.path}: no such store (check the path; an Executor creates one)")
                if not os.path.isdir(folder):
                    raise StoreError(f"{self.path}: folder {folder} does not exist; create it first")
                try:
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot create the store ({exc.strerror})") from None
        try:
            found = self._schema_version(create)
        except sa.exc.SQLAlchemyError as exc:
            self.dispose()
            raise StoreError(f"{self.name}: cannot open as a localabort store ({_reason(exc)})") from None
        if found is None:
            self.dispose()
            empty = self.path is not None and os.path.getsize(self.path) == 0
            what = "is an empty file" if empty else "is a database, but not a localabort store"
            raise StoreError(f"{self.name}: {what} (an Executor creates a store; check the path)")
        if int(found) > SCHEMA_VERSION:
            self.dispose()
            raise StoreError(
                f"{self.name}: written by a newer localabort (schema {found}, this one reads "
                f"{SCHEMA_VERSION}); upgrade localabort"
            )
        self.recover_dead_executors()

    def _schema_version(self, create: bool) -> Optional[str]:
        """The schema version the store records; ``None`` if it has no localabort schema.

        With ``create``, the schema is made first, in one transaction; two
        processes making one store at the same moment both succeed (the
        loser of the race finds the winner's tables and tries again).
        """
        for attempt in range(5):
            try:
                if create and self.path is not None:  # outside a transaction; it stays the file's mode
                    with self.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                with self.engine.begin() as conn:
                    if create:
                        metadata.create_all(conn)
                    elif not sa.inspect(conn).has_table(meta.name):  # a read: it adds nothing to the file
                        return None
                    found = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema")).scalar()
                    if create and found is None:
                        conn.execute(meta.insert().values(name="schema", value=str(SCHEMA_VERSION)))
                        found = SCHEMA_VERSION
                    return None if found is None else str(found)
            except sa.exc.SQLAlchemyError as exc:
                raced = any(word in str(exc) for word in ("already exists", "duplicate", "locked"))
                if not create or attempt == 4 or not raced:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writes ---------------------------------------------------------------

    def _upsert(self, keep_abort: bool) -> Any:
        stmt = self._statements.get(keep_abort)
        if stmt is None:
            stmt = self._statements[keep_abort] = self._build_upsert(keep_abort)
        return stmt

    def _build_upsert(self, keep_abort: bool) -> Any:
        dialect = self.engine.dialect.name
        insert: Any
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - guarded at open
            raise StoreError(f"{self.name}: unsupported database {dialect!r}; use SQLite or PostgreSQL")
        stmt = insert(tasks)
        set_: Dict[str, Any]
        if keep_abort:
            set_ = {c: stmt.excluded[c] for c in STATE_COLUMNS}
            where = sa.text(f"{tasks.name}.{UNFINISHED}")  # a final state stays final
        else:
            set_ = {
                "abort_requested_at": sa.func.coalesce(tasks.c.abort_requested_at, stmt.excluded.abort_requested_at)
            }
            where = None
        return stmt.on_conflict_do_update(index_elements=[tasks.c.id], set_=set_, where=where)

    def write(self, rows: Sequence[Dict[str, Any]], aborts: Sequence[Dict[str, Any]] = ()) -> None:
        """Write task rows and abort requests in one short transaction.

        ``rows`` hold ``id`` and every column of ``STATE_COLUMNS``; a row
        already in a final state is left as it is. ``aborts`` are full rows
        with ``abort_requested_at`` set, for tasks whose row may not exist
        yet; on an existing row only the request is written.
        """
        if not rows and not aborts:
            return
        with self._begin() as conn:
            if aborts:
                conn.execute(self._upsert(keep_abort=False), list(aborts))
            if rows:
                conn.execute(self._upsert(keep_abort=True), list(rows))

    def request_abort(self, task_id: str) -> bool:
        """Ask the task ``task_id`` to abort, from any process.

        Returns ``True`` if the request is recorded (now or before), ``False``
        if the task has finished or the store does not know it.
        """
        with self._begin() as conn:
            done = conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, sa.text(UNFINISHED))
                .values(abort_requested_at=sa.func.coalesce(tasks.c.abort_requested_at, time.time()))
            ).rowcount
        return bool(done)

    def abort_unclaimed(self, task_id: str, owner: str) -> bool:
        """End ``task_id`` ABORTED if it is still PENDING under ``owner``; return whether it was.

        The opposite of ``claim``: of an abort and a claim racing for one
        task, the database lets exactly one win, so a task aborted before
        it was claimed never runs.
        """
        blob = dump(unrun(task_id))
        with self._begin() as conn:
            ended = conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, tasks.c.state == PENDING, tasks.c.executor_id == owner)
                .values(state=ABORTED, finished_at=time.time(), result=blob)
            ).rowcount
        return bool(ended)

    def claim(self, row: Dict[str, Any]) -> str:
        """Move the task of ``row`` (a STARTED row) from PENDING to STARTED, unless it was aborted.

        Returns STARTED if the caller may run it, ABORTED if it must not (the
        task is stored ABORTED), or the final state of a task that finished
        already. ``row`` gets the task's stored ``submitted_at`` and ``key``.
        A task the store does not know (sent without a PENDING row) is
        recorded STARTED; one STARTED and not aborted (delivered again) may
        run again.
        """
        task_id = row["id"]
        with self._begin() as conn:
            claimed = conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, tasks.c.state == PENDING, tasks.c.abort_requested_at.is_(None))
                .values(state=STARTED, started_at=row["started_at"])
            ).rowcount
            query = sa.select(tasks.c.state, tasks.c.abort_requested_at, tasks.c.submitted_at, tasks.c.key)
            found = conn.execute(query.where(tasks.c.id == task_id)).first()
        if found is None:  # sent without a PENDING row (Celery's send_task, say): record it now
            self.write([row])
            return STARTED
        row.update(submitted_at=found.submitted_at, key=found.key)
        if claimed or (found.state == STARTED and found.abort_requested_at is None):  # or delivered again (acks_late)
            return STARTED
        if found.state in UNREADY_STATES:  # aborted in the instant before the claim
            self.write([dict(row, state=ABORTED, finished_at=time.time(), result=dump(unrun(task_id)))])
            return ABORTED
        return str(found.state)

    def register_executor(self, executor_id: str) -> None:
        """Record that an executor of this process writes to the store."""
        pid = os.getpid()
        row = dict(id=executor_id, hostname=socket.gethostname(), pid=pid, process_start=process_start(pid))
        with self._begin() as conn:
            conn.execute(executors.insert().values(started_at=time.time(), **row))

    def close_executor(self, executor_id: str) -> None:
        with self._begin() as conn:
            conn.execute(executors.update().where(executors.c.id == executor_id).values(closed_at=time.time()))

    def recover_dead_executors(self) -> List[str]:
        """Fail the unfinished tasks of executors on this host whose process has died.

        Their tasks end FAILURE with ``WorkerLost``, so no task stays
        PENDING or STARTED for ever. Runs whenever a process opens the
        store; returns the ids of the executors it closed.
        """
        host = socket.gethostname()
        query = sa.select(executors.c.id, executors.c.pid, executors.c.process_start).where(
            executors.c.closed_at.is_(None), executors.c.hostname == host
        )
        with self._connect() as conn:
            found = conn.execute(query).all()
        dead = [row for row in found if not alive(row.pid, row.process_start)]
        for row in dead:
            lost = WorkerLost(f"executor {row.id} (pid {row.pid} on {host}) died before this task finished")
            now = time.time()
            with self._begin() as conn:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.executor_id == row.id, sa.text(UNFINISHED))
                    .values(state=FAILURE, finished_at=now, result=dump(lost))
                )
                conn.execute(executors.update().where(executors.c.id == row.id).values(closed_at=now))
        return [row.id for row in dead]

    # -- reads ----------------------------------------------------------------

    def get(self, task_id: str) -> Optional[TaskRecord]:
        """The task ``task_id`` as stored, or ``None``."""
        with self._connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        return None if row is None else record(row)

    def is_abort_requested(self, task_id: str) -> bool:
        """Whether an abort was ever requested for ``task_id``."""
        with self._connect() as conn:
            at = conn.execute(sa.select(tasks.c.abort_requested_at).where(tasks.c.id == task_id)).scalar()
        return at is not None

    def aborts_requested(self, executor_id: str) -> List[str]:
        """Ids of ``executor_id``'s unfinished tasks with an abort requested."""
        query = sa.select(tasks.c.id).where(
            tasks.c.executor_id == executor_id,
            tasks.c.abort_requested_at.is_not(None),
            sa.text(UNFINISHED),
        )
        with self._connect() as conn:
            return list(conn.execute(query).scalars())

    def find_success(self, name: str, key: str) -> Optional[TaskRecord]:
        """The newest SUCCESS of task ``name`` under ``key``, or ``None``."""
        query = (
            sa.select(tasks)
            .where(tasks.c.name == name, tasks.c.key == key, tasks.c.state == SUCCESS)
            .order_by(tasks.c.finished_at.desc())
            .limit(1)
        )
        with self._connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else record(row)

    def tasks(
        self,
        ids: Optional[Iterable[str]] = None,
        *,
        states: Optional[Iterable[str]] = None,
        name: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> List[TaskRecord]:
        """Tasks newest first: all, or those of ``ids``, in ``states``, whose name contains ``name``."""
        query = sa.select(tasks).order_by(tasks.c.submitted_at.desc())
        if ids is not None:
            ids = list(ids)
            if len(ids) > ID_BATCH:  # in pieces: a database bounds one statement's parameters (SQLite: 32,766)
                pieces = (ids[i : i + ID_BATCH] for i in range(0, len(ids), ID_BATCH))
                parts = [self.tasks(piece, states=states, name=name) for piece in pieces]
                return sorted(itertools.chain(*parts), key=lambda r: -(r.submitted_at or 0.0))[:limit]
            query = query.where(tasks.c.id.in_(ids))
        if states is not None:
            query = query.where(tasks.c.state.in_(list(states)))
        if name is not None:
            query = query.where(tasks.c.name.contains(name, autoescape=True))
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            return [record(row) for row in conn.execute(query)]

    def counts(self) -> Dict[str, int]:
        """How many tasks the store holds in each state."""
        query = sa.select(tasks.c.state, sa.func.count()).group_by(tasks.c.state)
        with self._connect() as conn:
            return {state: count for state, count in conn.execute(query)}

    def request_abort_all(self) -> List[str]:
        """Ask every unfinished task in the store to abort; return the ids newly asked."""
        now = time.time()
        where = sa.and_(sa.text(UNFINISHED), tasks.c.abort_requested_at.is_(None))
        with self._begin() as conn:
            return list(
                conn.execute(tasks.update().where(where).values(abort_requested_at=now).returning(tasks.c.id)).scalars()
            )

    def forget(self, older_than: float) -> int:
        """Delete finished tasks that finished more than ``older_than`` seconds ago; return how many."""
        cutoff = time.time() - older_than
        with self._begin() as conn:
            done = conn.execute(
                tasks.delete().where(tasks.c.state.in_(sorted(READY_STATES)), tasks.c.finished_at < cutoff)
            ).rowcount
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


def _locate(spec: str) -> Tuple[str, Optional[str]]:
    """The SQLAlchemy URL of the store ``spec`` names, and its file's absolute path if it is an SQLite file.

    ``spec`` is a path (``~`` expanded, relative to the current folder) or a
    URL; a plain ``sqlite:///`` URL names a file the same way, so
    ``sqlite:///rel.sqlite`` is ``rel.sqlite`` here. A URI one
    (``?uri=true``) names it its own way.
    """
    if "://" not in spec:
        path = os.path.abspath(os.path.expanduser(spec))
        return "sqlite:///" + path, path
    url = make_url(spec)
    if url.get_backend_name() != "sqlite" or "uri" in url.query or not url.database or url.database == ":memory:":
        return spec, None
    path = os.path.abspath(os.path.expanduser(url.database))
    return url.set(database=path).render_as_string(hide_password=False), path


def _reason(exc: BaseException) -> str:
    """The database's own words for a failure, on one line."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
