"""A process's watch over the aborts of the tasks it runs outside an executor (on a Celery worker).

An ``Executor`` learns of aborts from other processes through its
manager's poll and hands them to its workers in shared memory. A Celery
worker process has no manager, so each one that runs tasks keeps one
``Watch`` (``watch(store)``): a thread that reads the store for all of
this process's running tasks at once, and sets a flag that
``is_aborted()`` reads, so a check costs an attribute read, never a query.

- On PostgreSQL the thread waits on a ``LISTEN`` connection (``_listen``):
  an abort request is committed with a notification, and the thread reads
  the rows when one comes, about a millisecond later; it also reads them
  every ``FALLBACK`` s, in case a notification was lost.
- On SQLite it reads them every ``POLL_INTERVAL`` s: one indexed read of
  the running ids, for the whole process.

The same thread keeps the process alive in the store's eyes: the process
registers as an executor (its tasks' rows name it), renews its
``flushed_at`` every ``HEARTBEAT`` s, and every ``RECOVER_EVERY`` s ends
the tasks of dead ones (``Store.recover_dead_executors``: a process gone on
this host, or silent for long on another), so a worker killed whole has
its tasks ended by the next process that watches.

It also kills this process when a task asked to ``terminate_after`` runs
past its deadline, once the store holds the task's final state.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Callable, Dict, List, Optional

from ._jobs import new_id
from ._procs import HEARTBEAT
from ._store import RECOVER_EVERY, Store

__all__ = ["FALLBACK", "POLL_INTERVAL", "Watch", "Watched", "watch"]

#: Seconds between two reads of the running tasks' aborts, where no notification says when (SQLite).
POLL_INTERVAL = 0.004
#: Seconds between two reads even with notifications (PostgreSQL): what a lost one may cost.
FALLBACK = 1.0


class Watched:
    """One running task under watch: ``aborted`` is set once the store holds an abort request for it."""

    __slots__ = ("aborted", "on_deadline", "task_id", "terminate_at")

    def __init__(self, task_id: str, on_deadline: Callable[[], None]) -> None:
        self.task_id = task_id
        self.aborted = False
        self.terminate_at: Optional[float] = None
        self.on_deadline = on_deadline  # stores the task's end, then kills this process


class Watch:
    """The watch of one process over the tasks it runs on one store (see the module's description)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.executor_id = new_id()
        self._running: Dict[str, Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by ``add`` and ``stop``: polling starts at once, or the thread ends
        # Held while the thread uses the store: a fork waits for it, so no child inherits SQLite's locks held.
        self._busy = threading.Lock()
        _live.add(self)
        store.register_executor(self.executor_id)
        self._listener = store.listener()
        self._thread = threading.Thread(target=self._run, name="localabort-watch", daemon=True)
        self._thread.start()

    def add(self, task_id: str, on_deadline: Callable[[], None]) -> Watched:
        """Watch ``task_id`` from now on (read at once: an abort asked before it started is seen at the first check)."""
        watched = Watched(task_id, on_deadline)
        found = self.store.aborting([task_id])
        if task_id in found:
            watched.aborted, watched.terminate_at = True, found[task_id]
        with self._lock:
            self._running[task_id] = watched
        self._wake.set()
        return watched

    def remove(self, watched: Watched) -> None:
        with self._lock:
            self._running.pop(watched.task_id, None)

    def stop(self) -> None:
        """End the watch: its thread, its listening connection, its registration. (A process's watch lives as long.)"""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        _live.discard(self)
        if self._listener is not None:
            self._listener.close()
        self._quietly(lambda: self.store.close_executor(self.executor_id))

    def _run(self) -> None:
        heartbeat_at = recover_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._busy:
                if now >= heartbeat_at:
                    self._quietly(lambda: self.store.heartbeat(self.executor_id))
                    heartbeat_at = now + HEARTBEAT
                if now >= recover_at:
                    self._quietly(self.store.recover_dead_executors)
                    recover_at = now + RECOVER_EVERY
                self._read()
            self._wait(min(heartbeat_at, recover_at) - time.monotonic())

    def _wait(self, until_chores: float) -> None:
        """Until a notification, the next poll, a chore or the earliest ``terminate_at`` of a task.

        With no task running there is nothing to poll for: an idle process
        wakes for its chores only (or when ``add`` gives it a task). A
        listener is always read, busy or not: notifications left unread
        would pile up in the server's queue.
        """
        with self._lock:
            busy = bool(self._running)
            deadlines = [w.terminate_at for w in self._running.values() if w.terminate_at is not None]
        timeout = until_chores
        if busy:
            timeout = min(timeout, FALLBACK if self._listener is not None else POLL_INTERVAL)
        if deadlines:
            timeout = min(timeout, min(deadlines) - time.time())
        timeout = max(timeout, 0.0)
        if self._listener is None:
            self._wake.wait(timeout)
            self._wake.clear()
            return
        try:
            self._listener.wait(timeout)
        except Exception:  # the connection dropped: poll until a new one listens
            self._listener = None
            with self._busy:
                self._quietly(self._relisten)

    def _relisten(self) -> None:
        self._listener = self.store.listener()

    def _read(self) -> None:
        with self._lock:
            ids = list(self._running)
        if not ids:
            return
        try:
            found = self.store.aborting(ids)
        except Exception:  # the store is away for a moment: the next read tries again
            return
        now = time.time()
        with self._lock:
            hits = [(self._running[i], at) for i, at in found.items() if i in self._running]
        for watched, at in hits:
            watched.terminate_at = at
            watched.aborted = True
            if at is not None and now >= at:
                watched.on_deadline()

    @staticmethod
    def _quietly(chore: Callable[[], object]) -> None:
        try:
            chore()
        except Exception:  # a store that is away for a moment must not end the watch
            pass


#: This process's watches, by store URL (``watch``); emptied in a forked child, whose threads did not follow it.
_watches: Dict[str, Watch] = {}
_watches_lock = threading.Lock()
#: Every watch of this process whose thread runs, ``watch``'s or not: a fork waits until none uses its store.
_live: weakref.WeakSet[Watch] = weakref.WeakSet()


def watch(store: Store) -> Watch:
    """This process's ``Watch`` over ``store``, started on first use."""
    with _watches_lock:
        found = _watches.get(store.url)
        if found is None:
            found = _watches[store.url] = Watch(store)
        return found


_held: List[Watch] = []  # the watches ``_before_fork`` holds, until the fork is done


def _before_fork() -> None:
    _held[:] = list(_live)
    for w in _held:
        w._busy.acquire()


def _after_fork_in_parent() -> None:
    for w in _held:
        w._busy.release()
    _held.clear()


def _after_fork_in_child() -> None:
    global _watches_lock, _live
    _watches.clear()
    _watches_lock = threading.Lock()
    _live = weakref.WeakSet()
    _held.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
