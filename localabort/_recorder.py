"""The recorder: an executor's store writes, in a process of their own.

Why a process. An executor writes the store at every group commit: the
rows of changed tasks, the claims of the next queued ones, then a read of
the aborts asked for them (``Store.sync``). Most of that work is SQLite's,
in C, and ``sqlite3`` lets go of the GIL around each statement; but in the
parent it takes the GIL back after each one, and a thread waiting for the
GIL behind a busy one (the user's ``submit()`` loop, the manager) may wait
the whole switch interval, 5 ms, for each. So a write of four claims took
20 to 50 ms while a script submitted, and its CPU, 60 µs a trivial task,
was taken from the threads that move the tasks. In a process of its own,
a write costs the parent a pickle and a pipe write, and the store's work
runs on the other core.

The protocol, over one pipe (the parent's end is ``Recorder``'s)::

    parent --go: (url, name, connect, executor id)-->  open the store (the parent made it)
    parent <--(None, None)---------------------------  ready: the store is open
    parent --(rows, aborts, claims, flushed_at)-->   one write, ``Store.sync``'s arguments
    parent <--(True, answer) or (False, error)--     exactly one answer per write, in order
    parent --b""---------------------> recorder  stop

One write at a time: the manager hands the next only once it has taken the
answer to the last. The recorder starts once the writes made in the parent
have cost ``START_AFTER`` of CPU, 2 ms: a few tasks' writes, so a batch has
it from its first writes. Until it says it is ready, the parent makes the writes, on
the manager's thread, with the same statements (``_sql.sync``). On an
SQLite store it is ready in the time of a bare interpreter and ``sqlite3``
(90 ms here): it writes with ``sqlite3`` alone, opened as the parent's
engine opens the file (an existing file only), and never imports
SQLAlchemy; any other store it opens with ``Store``, SQLAlchemy and all. An error it meets (the
store's, or an open that fails) is the answer to the write it was handed,
or its first message, and the manager breaks on it as on a failed write of
its own. The recorder ignores SIGINT and SIGHUP (the producer decides what
a Ctrl-C means, and its last writes go through here), runs in a session of
its own, and exits when its pipe closes or its parent dies.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing.connection
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ._errors import StoreError
from ._interrupt import start_thread
from ._messages import STOP, receive
from ._procs import exit_words

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["START_AFTER", "Recorder", "Write"]

#: Seconds the recorder has to exit, once asked, before it is killed.
STOP_GRACE = 5.0
#: CPU seconds of writes the parent makes before it starts the recorder: a few tasks' (a batch of any size
#: has it from its first writes).
START_AFTER = 0.002
#: Seconds between two checkpoints of an SQLite store's WAL, at most, while the recorder writes (``Checkpoints``).
CHECKPOINT_EVERY = 0.1
#: Seconds between the recorder's looks at whether its parent is still there.
PARENT_CHECK = 0.5
#: The folder ``localabort`` is imported from here, which the recorder imports it from too.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Write:
    """One write handed to the recorder, and what came of it."""

    __slots__ = ("aborts", "answer", "claims", "error", "flushed_at", "rows", "unresolved")

    def __init__(self, rows: List[Any], aborts: List[Any], claims: List[Any], flushed_at: float,
                 unresolved: List[Any]) -> None:  # fmt: skip
        self.rows, self.aborts, self.claims, self.flushed_at = rows, aborts, claims, flushed_at
        self.unresolved = unresolved  # finished jobs whose futures complete once this is stored
        self.answer: Tuple[List[str], Any] = ([], {})  # ``Store.sync``'s: ids aborted, and claims refused
        self.error: Optional[BaseException] = None


class Recorder:
    """The parent's side: start the recorder process, hand it writes, take their answers, stop it.

    ``done_r`` is readable once the answer to the write handed over has
    come (or the recorder died): the manager waits on it with the workers'
    pipes, and ``take`` then returns the write with its answer.
    """

    def __init__(self, store: Store, executor_id: str) -> None:
        self._store, self._executor_id = store, executor_id
        self._conn: Optional[multiprocessing.connection.Connection] = None  # the pipe, once started
        self._process: Optional[subprocess.Popen[bytes]] = None
        self.done_r: Optional[int] = None  # the pipe's descriptor, once started
        self.pid: Optional[int] = None
        self.pending: Optional[Write] = None  # the write handed over, until taken
        self.ready = False  # the recorder has opened the store: writes go there from now on
        self._answered = False  # the write handed over was made here, the recorder not being ready
        self._spent = 0.0  # CPU seconds the writes made here took
        self._open = True

    def _start(self) -> None:
        """Start the recorder process, once the writes made here have cost ``START_AFTER``.

        A new interpreter, as ``subprocess`` starts one, whatever start
        method the workers use: a process forked from this one could inherit
        a lock another thread held at that moment (SQLAlchemy's, say) and
        wait on it for ever; and ``multiprocessing``'s spawn would import
        the main script again, which under fork need not be guarded. It runs
        ``serve`` in a session of its own, out of reach of a terminal's
        Ctrl-C, on the ``localabort`` this process imported.
        """
        store = self._store
        target = (store.url, store.name, store.driver_connect(), self._executor_id)  # before a process waits for it
        # Made now, not before: a worker forked earlier holding the recorder's end would hide its death.
        self._conn, child_end = multiprocessing.Pipe(duplex=True)
        fd = child_end.fileno()
        code = f"import sys; sys.path.insert(0, {_ROOT!r}); from localabort._recorder import main; main({fd})"
        try:
            self._process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                             start_new_session=True)  # fmt: skip
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        finally:
            child_end.close()
        self.done_r, self.pid = self._conn.fileno(), self._process.pid
        self._send(target)

    def hand(self, write: Write) -> bool:
        """Hand ``write`` over; ``True`` if it was made at once, here (the recorder is not ready yet): ``take`` it."""
        self.pending = write
        claims = [(job.id, job.name, job.key) for job in write.claims]
        if self.pid is None and self._spent >= START_AFTER:
            try:
                self._start()
            except Exception:  # no process to start here (descriptors, memory): the writes stay in this one
                self._spent = -math.inf
        if self.ready:
            self._send((write.rows, write.aborts, claims, write.flushed_at))
            return False
        start = time.thread_time()
        try:
            write.answer = self._store.sync(self._executor_id, write.rows, write.aborts, claims=claims,
                                            flushed_at=write.flushed_at)  # fmt: skip
        except Exception as exc:  # as the recorder would answer it
            write.error = exc
        self._spent += time.thread_time() - start
        self._answered = True
        return True

    def _send(self, message: Any) -> None:
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except OSError:  # it died: ``take`` says so
            pass

    def take(self) -> Optional[Write]:
        """The write handed over, with its answer (waiting for it); a recorder that died fails it.

        Called when ``done_r`` is readable with no write handed over: the
        recorder says it is ready (``None``), or it has died, or could not
        open the store (that raises its ``StoreError``).
        """
        write = self.pending
        if write is not None and self._answered:
            self.pending, self._answered = None, False
            return write
        assert self._conn is not None  # done_r, which only a started recorder has, said it is readable
        while True:
            try:
                ok, answer = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                if write is None:
                    raise self._lost() from None
                self.pending, write.error = None, self._lost()
                return write
            if ok is None:  # ready: writes go to the recorder from the next one on
                self.ready = True
                if write is None:
                    return None
                continue
            if write is None:  # not an answer to anything: the store could not be opened there
                raise answer
            self.pending = None
            if ok:
                write.answer = answer
            else:
                write.error = answer
            return write

    def _lost(self) -> StoreError:
        assert self._process is not None
        try:
            code: Optional[int] = self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        how = "is not answering" if code is None else exit_words(code)
        return StoreError(f"{self._store.name}: the executor's store writer process (pid {self.pid}) {how}")

    def stop(self, kill: bool = False) -> None:
        """Ask the recorder to exit (``kill``: kill it), wait for it, and close its pipe; once.

        One that does not exit within ``STOP_GRACE`` s is killed.
        """
        if not self._open:
            return
        self._open = False
        process, conn = self._process, self._conn
        if process is None or conn is None:  # never started
            return
        if kill or not self.ready:  # nothing to finish: not ready, it was never handed a write
            process.kill()
        else:
            with contextlib.suppress(OSError):  # gone already
                conn.send_bytes(STOP)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        conn.close()


def main(fd: int) -> None:
    """The recorder process's entry point: serve the pipe whose end is descriptor ``fd``.

    Before Python 3.12, ``sqlite3`` looks for an adapter for each ``None``
    and ``bytes`` it binds, and finds none the slow way (two attribute
    lookups after the registry's): a third of a row's cost, with a dozen
    ``None`` in a row. An adapter that returns its value binds the same
    NULL or BLOB from the registry at once. Registered here, in the
    recorder's own process, never in one whose ``sqlite3`` a user shares.
    """
    if sys.version_info < (3, 12):
        import sqlite3

        for kind in (type(None), bytes):
            sqlite3.register_adapter(kind, _same)
    serve(multiprocessing.connection.Connection(fd))


def _same(value: Any) -> Any:
    return value


def serve(conn: multiprocessing.connection.Connection) -> None:
    """The recorder process: open the store when told, then answer each write until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the manager's thread, which started it, blocks them all
    _exit_with_parent()
    sync: Optional[Callable[..., Any]] = None
    failed: Optional[BaseException] = None
    try:
        while True:
            message = receive(conn)
            if message is None:
                return
            work = pickle.loads(message)
            if sync is None and failed is None:  # the first message: where the store is
                try:
                    sync = _writer_for(*work)
                except BaseException as exc:
                    failed = exc
                    conn.send_bytes(pickle.dumps((False, _portable(exc)), pickle.HIGHEST_PROTOCOL))
                else:
                    conn.send_bytes(pickle.dumps((None, None), pickle.HIGHEST_PROTOCOL))
                continue
            try:
                if failed is not None:
                    raise failed
                assert sync is not None
                reply: Tuple[bool, Any] = (True, sync(*work))
            except BaseException as exc:
                reply = (False, _portable(exc))
            conn.send_bytes(pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
    finally:
        if isinstance(sync, SQLiteWrites):  # its checkpoint thread ends between two checkpoints, not in one
            sync.close()


def _writer_for(url: str, name: str, connect: Optional[Tuple[List[Any], Dict[str, Any]]], executor_id: str) -> Any:
    """The recorder's write, ``sync(rows, aborts, claims, flushed_at)``, on the store ``url`` names.

    An SQLite store is written with ``sqlite3`` alone (``SQLiteWrites``), so
    the recorder never imports SQLAlchemy. Any other goes through ``Store``.
    """
    if connect is None:
        from ._store import Store

        store = Store.open(url)
        return functools.partial(_store_sync, store, executor_id)
    return SQLiteWrites(name, connect, executor_id)


class SQLiteWrites:
    """The recorder's writes to an SQLite store, with ``sqlite3`` alone: ``__call__`` is one write.

    The store is opened as the parent's ``Store`` opens it (``connect``:
    ``Store.driver_connect``; ``_sqlite.opened``), and each write is a ``BEGIN IMMEDIATE``
    transaction; the write connection never checkpoints (``Checkpoints``).
    """

    def __init__(self, name: str, connect: Tuple[List[Any], Dict[str, Any]], executor_id: str) -> None:
        import sqlite3

        from ._sqlite import opened

        self._name, self._executor_id = name, executor_id
        try:
            self.db = opened(*connect)
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # never in a write: ``Checkpoints``
            self.checkpoints = Checkpoints(opened(*connect))
        except sqlite3.Error as exc:
            raise StoreError(f"{name}: cannot open the store ({exc})") from None

    def __call__(self, rows: Any, aborts: Any, claims: Any, flushed_at: Optional[float]) -> Any:
        import sqlite3

        from ._sql import reason, sync

        cur = self.db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            answer = sync(cur, False, self._executor_id, rows, aborts, claims, flushed_at)
            cur.execute("COMMIT")
        except BaseException as exc:
            # SQLite may have rolled back already (a full disk, I/O): a ROLLBACK then would fail, and hide why.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.rollback()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self._name}: cannot write the store ({reason(exc)})") from None
            raise
        self.checkpoints.due()
        return answer

    def close(self) -> None:
        self.checkpoints.close()
        self.db.close()


class Checkpoints:
    """The recorder's checkpoints: the WAL copied into the store file on a thread of its own, never in a write.

    SQLite checkpoints in the connection whose commit takes the WAL past
    1,000 pages, and a checkpoint syncs the file to disk: 12 to 18 ms here,
    30 times in a batch of 4,000 tasks of 1 ms. In the recorder's writes
    that held up the claims the workers wait for, so they ran out of jobs.
    So the recorder's connection never checkpoints, and this thread does,
    on a connection of its own, at most every ``CHECKPOINT_EVERY`` s while
    writes come: a PASSIVE checkpoint, which never blocks a writer (and
    ``sqlite3`` lets go of the GIL meanwhile). One that cannot copy every
    page (a reader holds an older one) or fails is tried again after the
    next pause. ``made`` counts those that copied every page.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._due = threading.Event()
        self._open = True
        self.made = 0
        self._thread = threading.Thread(target=self._run, name="localabort-checkpoints", daemon=True)
        start_thread(self._thread)

    def due(self) -> None:
        """A write was committed: the WAL grew."""
        self._due.set()

    def close(self) -> None:
        """Stop the thread (after the checkpoint under way) and close its connection."""
        self._open = False
        self._due.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        import sqlite3

        while True:
            self._due.wait()
            if not self._open:
                return
            self._due.clear()
            try:
                ((busy, pages, copied),) = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                busy, pages, copied = 1, 0, 0
            if busy or copied < pages:
                self._due.set()  # again after the pause: the WAL restarts only once every page is copied
            else:
                self.made += 1
            time.sleep(CHECKPOINT_EVERY)


def _store_sync(
    store: Store, executor_id: str, rows: Any, aborts: Any, claims: Any, flushed_at: Optional[float]
) -> Any:
    return store.sync(executor_id, rows, aborts, claims=claims, flushed_at=flushed_at)


def _portable(exc: BaseException) -> BaseException:
    """``exc``, or a ``StoreError`` saying it, if it does not survive a pickle."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return StoreError(f"{type(exc).__name__}: {exc}")
    return exc


def _exit_with_parent() -> None:
    """Exit as soon as the process that started this one has gone (its pipe may stay open in its workers)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        os._exit(1)

    start_thread(threading.Thread(target=watch, name="localabort-parent-watch", daemon=True))
