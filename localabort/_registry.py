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
connections (``_begin``, ``_connect``) and its failures read as the store's.
"""

from __future__ import annotations

import os
import socket
import time
from typing import ContextManager, List

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._errors import WorkerLost
from ._procs import SILENT, Registered, flushed, gone, pid_namespace, process_start
from ._schema import end_tasks, executors, tasks
from ._sql import STANDING, UNFINISHED
from ._states import FAILURE

__all__ = ["Registry"]


class Registry:
    """The executors' rows of a store (a base of ``Store``, which gives the connections)."""

    def _begin(self) -> ContextManager[Connection]:
        raise NotImplementedError  # ``Store._begin``

    def _connect(self) -> ContextManager[Connection]:
        raise NotImplementedError  # ``Store._connect``

    def register_executor(self, executor_id: str) -> None:
        """Record that an executor of this process writes to the store."""
        pid = os.getpid()
        row = dict(id=executor_id, hostname=socket.gethostname(), pid=pid, process_start=process_start(pid),
                   pid_namespace=pid_namespace())  # fmt: skip
        with self._begin() as conn:
            now = time.time()  # nothing handed out yet
            conn.execute(executors.insert().values(started_at=now, flushed_at=now, **row))
            # A standing abort whose asker died waiting (its wait ended long ago): tidied here, as readers never write.
            conn.execute(
                tasks.delete().where(
                    tasks.c.executor_id.is_(None), tasks.c.name == STANDING, sa.text(UNFINISHED),
                    tasks.c.abort_requested_at < now - 10 * SILENT,
                )
            )  # fmt: skip

    def heartbeat(self, executor_id: str) -> None:
        """Record that the executor ``executor_id`` (or a worker process's watch) is alive, though it wrote nothing."""
        with self._begin() as conn:
            conn.execute(executors.update().where(executors.c.id == executor_id).values(flushed_at=time.time()))

    def close_executor(self, executor_id: str) -> None:
        with self._begin() as conn:
            conn.execute(executors.update().where(executors.c.id == executor_id).values(closed_at=time.time()))

    def recover_dead_executors(self) -> List[str]:
        """Fail the unfinished tasks of executors whose process has died.

        Dead as ``_procs.gone`` (and the module's docstring) says.

        Their tasks end FAILURE with ``WorkerLost``, so no task stays
        PENDING or STARTED for ever. Runs whenever a process opens the
        store, and every ``RECOVER_EVERY`` s while a watcher waits on it
        (``AbortableAsyncResult.get``, ``localabort watch``); returns the
        ids of the executors it closed.
        """
        query = sa.select(executors.c.id, *_GONE_COLUMNS).where(executors.c.closed_at.is_(None))
        with self._connect() as conn:
            found = conn.execute(query).all()
        host, here, now = socket.gethostname(), pid_namespace(), time.time()
        dead = [row for row in found if gone(Registered(*row[1:]), host, here, now)]
        closed = []
        for row in dead:
            lost = WorkerLost(f"executor {row.id} (pid {row.pid} on {row.hostname}) died before this task finished")
            now = time.time()
            with self._begin() as conn:
                # Closed only if still as read: not closed by another process meanwhile, not written since.
                silent = executors.c.flushed_at.is_(None) if row.flushed_at is None else (
                    executors.c.flushed_at == row.flushed_at)  # fmt: skip
                if not conn.execute(
                    executors.update().where(executors.c.id == row.id, executors.c.closed_at.is_(None), silent)
                    .values(closed_at=now)
                ).rowcount:  # fmt: skip
                    continue
                conn.execute(
                    end_tasks(tasks.c.executor_id == row.id, sa.text(UNFINISHED), state=FAILURE, exc=lost, at=now)
                )
            closed.append(row.id)
        return closed

    def _written_since(self, since: float) -> bool:
        """Whether every executor that may still write has written every id it handed out before ``since``."""
        query = sa.select(*_GONE_COLUMNS).where(executors.c.closed_at.is_(None))
        with self._connect() as conn:
            found = [Registered(*row) for row in conn.execute(query)]
        host, here, now = socket.gethostname(), pid_namespace(), time.time()
        return all(flushed(row) >= since or now - flushed(row) > SILENT or gone(row, host, here, now) for row in found)


#: What ``gone`` reads of an executor's row.
_GONE_COLUMNS = [executors.c[name] for name in Registered._fields]
