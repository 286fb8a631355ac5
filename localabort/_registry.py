"""Who writes a store: the registry of executors, how a dead one is told from a live one, and its tasks' end.

Every ``Executor`` (and every Celery worker process's watch, ``_watch``)
registers a row in ``localabort_executors``, with its pid, start time and
PID namespace, and renews its ``flushed_at`` at least every ``HEARTBEAT``
s (``_procs``). One test, ``_procs.gone``, says an executor is dead: to a reader
in its PID namespace, at once, when no process of its pid (and start
time) runs; to another on its host, when that also holds and it has been
silent for ``SILENT`` s (containers that share a hostname see each
other's pids as dead); on another host, when it has been silent for
``REMOTE_SILENT`` s. ``recover_dead_executors`` then ends its unfinished
tasks FAILURE (``WorkerLost``), so no task waits for ever on a process
that is gone; ``_written_since`` tells a reader whether an id no row holds
may still be written by an executor that is neither gone nor hung.

``Registry`` is a base of ``Store``: its SQL goes through the store's own
connections (``_writing``, ``_reading``: DB-API cursors, so an executor on
an SQLite file registers and beats without SQLAlchemy, ``_sqlite``; only a
dead executor's recovery writes through SQLAlchemy, ``_begin``) and its
failures read as the store's.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, ContextManager, List

from ._errors import WorkerLost
from ._procs import SILENT, Registered, flushed, gone, pid_namespace, process_start
from ._sql import EXECUTORS, STANDING, TASKS, UNFINISHED, spelled
from ._states import FAILURE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["Registry"]


class Registry:
    """The executors' rows of a store (a base of ``Store``, which gives the connections)."""

    def _begin(self) -> ContextManager[Connection]:
        raise NotImplementedError  # ``Store._begin``

    def _writing(self) -> ContextManager[Any]:
        raise NotImplementedError  # ``Store._writing``

    def _reading(self) -> ContextManager[Any]:
        raise NotImplementedError  # ``Store._reading``

    @property
    def postgres(self) -> bool:
        raise NotImplementedError  # ``Store.postgres``

    def register_executor(self, executor_id: str) -> None:
        """Record that an executor of this process writes to the store."""
        pid = os.getpid()
        row = dict(id=executor_id, hostname=socket.gethostname(), pid=pid, process_start=process_start(pid),
                   pid_namespace=pid_namespace())  # fmt: skip
        with self._writing() as cur:
            now = time.time()  # nothing handed out yet
            cur.execute(spelled(_REGISTER, self.postgres), dict(row, started_at=now, flushed_at=now))
            # A standing abort whose asker died waiting (its wait ended long ago): tidied here, as readers never write.
            cur.execute(spelled(_STALE_STANDING, self.postgres), {"before": now - 10 * SILENT})

    def heartbeat(self, executor_id: str) -> None:
        """Record that the executor ``executor_id`` (or a worker process's watch) is alive, though it wrote nothing."""
        with self._writing() as cur:
            cur.execute(spelled(f"UPDATE {EXECUTORS} SET flushed_at = :at WHERE id = :id", self.postgres),
                        {"at": time.time(), "id": executor_id})  # fmt: skip

    def close_executor(self, executor_id: str) -> None:
        with self._writing() as cur:
            cur.execute(spelled(f"UPDATE {EXECUTORS} SET closed_at = :at WHERE id = :id", self.postgres),
                        {"at": time.time(), "id": executor_id})  # fmt: skip

    def recover_dead_executors(self) -> List[str]:
        """Fail the unfinished tasks of executors whose process has died.

        Dead as ``_procs.gone`` (and the module's docstring) says.

        Their tasks end FAILURE with ``WorkerLost``, so no task stays
        PENDING or STARTED for ever. Runs whenever a process opens the
        store, and every ``RECOVER_EVERY`` s while a watcher waits on it
        (``AbortableAsyncResult.get``, ``localabort watch``); returns the
        ids of the executors it closed.
        """
        with self._reading() as cur:
            cur.execute(f"SELECT id, {_GONE_COLUMNS} FROM {EXECUTORS} WHERE closed_at IS NULL")
            found = [(row[0], Registered(*row[1:])) for row in cur.fetchall()]
        host, here, now = socket.gethostname(), pid_namespace(), time.time()
        dead = [(executor_id, row) for executor_id, row in found if gone(row, host, here, now)]
        if not dead:
            return []
        import sqlalchemy as sa  # the rest, rarely needed, with SQLAlchemy

        from ._schema import end_tasks, executors, tasks

        closed = []
        for executor_id, row in dead:
            what = f"executor {executor_id} (pid {row.pid} on {row.hostname})"
            lost = WorkerLost(f"{what} died before this task finished")
            now = time.time()
            with self._begin() as conn:
                # Closed only if still as read: not closed by another process meanwhile, not written since.
                silent = executors.c.flushed_at.is_(None) if row.flushed_at is None else (
                    executors.c.flushed_at == row.flushed_at)  # fmt: skip
                if not conn.execute(
                    executors.update().where(executors.c.id == executor_id, executors.c.closed_at.is_(None), silent)
                    .values(closed_at=now)
                ).rowcount:  # fmt: skip
                    continue
                conn.execute(
                    end_tasks(tasks.c.executor_id == executor_id, sa.text(UNFINISHED), state=FAILURE, exc=lost, at=now)
                )
            closed.append(executor_id)
        return closed

    def _written_since(self, since: float) -> bool:
        """Whether every executor that may still write has written every id it handed out before ``since``."""
        with self._reading() as cur:
            cur.execute(f"SELECT {_GONE_COLUMNS} FROM {EXECUTORS} WHERE closed_at IS NULL")
            found = [Registered(*row) for row in cur.fetchall()]
        host, here, now = socket.gethostname(), pid_namespace(), time.time()
        return all(flushed(row) >= since or now - flushed(row) > SILENT or gone(row, host, here, now) for row in found)


#: What ``gone`` reads of an executor's row.
_GONE_COLUMNS = ", ".join(Registered._fields)
_REGISTER = (
    f"INSERT INTO {EXECUTORS} (id, hostname, pid, process_start, pid_namespace, started_at, flushed_at) "
    "VALUES (:id, :hostname, :pid, :process_start, :pid_namespace, :started_at, :flushed_at)"
)
_STALE_STANDING = (
    f"DELETE FROM {TASKS} WHERE executor_id IS NULL AND name = '{STANDING}' AND {UNFINISHED} "
    "AND abort_requested_at < :before"
)
