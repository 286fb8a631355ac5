"""A process's watch over the aborts of the tasks it runs outside an executor (on a Celery worker).

An ``Executor`` learns of aborts from other processes through its
manager's poll and hands them to its workers in shared memory. A Celery
worker process has no manager, so each one that runs tasks keeps one
``Watch`` (``watch(store)``) over the tasks it runs, and ``is_aborted()``
reads the flag it sets (``Watched.aborted``).

Who reads the store matters as much as how often. A task that checks in
a busy loop holds the GIL, and a thread of the same process gets it back
only every switch interval (5 ms), once per step of a query: a watch
thread that reads the store took 20 to 100 ms to see an abort. So the
checks themselves read, in the task's own thread, at most every so often
for the whole process (``look``):

- On PostgreSQL an abort is committed with a notification (``_listen``)
  that names the task; a check asks the process's listening socket
  whether one came (a ``select``, every ``NOTIFIED_EVERY`` s at most), and
  sets the flag of the task it names: about a millisecond after the
  commit, with no query. The checks still read the rows every
  ``FALLBACK`` s, so a notification lost (a dropped connection, a pooler
  that does not pass ``LISTEN`` on) costs a second, never the abort.
- On SQLite a check reads those rows every ``POLL_INTERVAL`` s at most: one
  indexed query for the whole process, whichever of its threads makes it.

A check in between costs a clock read. The watch's own thread does the
rest, where a few tenths of a second do not matter: it reads every
``THREAD_POLL`` s for tasks that seldom check or never do (and kills this
process when one asked to ``terminate_after`` runs past its deadline, once
the store holds the task's final state), reads the notifications of an
idle process so they do not pile up on the server, and keeps the process
alive in the store's eyes: the process registers as an executor (its
tasks' rows name it), renews its ``flushed_at`` every ``HEARTBEAT`` s, and
every ``RECOVER_EVERY`` s ends the tasks of dead ones
(``Store.recover_dead_executors``: a process gone on this host, or silent
for long on another), so a worker killed whole has its tasks ended by the
next process that watches.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Callable, Dict, List, Optional, Tuple

from ._interrupt import start_thread
from ._listen import ANY, Listener
from ._procs import HEARTBEAT
from ._states import new_id
from ._store import RECOVER_EVERY, Store

__all__ = ["FALLBACK", "NOTIFIED_EVERY", "POLL_INTERVAL", "THREAD_POLL", "Watch", "Watched", "watch"]

#: Seconds between two reads of the running tasks' aborts by the checks, where no notification says when (SQLite).
POLL_INTERVAL = 0.003
#: Seconds between two looks at the listening socket by the checks (PostgreSQL): a ``select``, no query.
NOTIFIED_EVERY = 0.0005
#: Seconds between two reads by the checks even with no notification (PostgreSQL): what a lost one costs at most
#: (a dropped connection, a pooler that does not pass ``LISTEN`` on).
FALLBACK = 1.0
#: Seconds between two reads by the watch's thread: for tasks that seldom check, and ``terminate_after``.
THREAD_POLL = 0.25


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
        self._lock = threading.Lock()  # guards ``_running``
        self.next_look = 0.0  # when a check is to look again (monotonic)
        self._next_read = 0.0  # when a check reads the rows even without a notification (PostgreSQL)
        self.looked = 0.0  # when a check last looked (then ``next_look``): the thread leaves reading to the checks
        self._stop = threading.Event()
        # Held while the watch reads the store, from its thread or a check: one reader at a time (a check that
        # finds it taken goes on). ``_chores``: while the thread writes its heartbeat or recovers dead processes.
        # A fork waits for both, so no child inherits SQLite's locks held.
        self._busy = threading.Lock()
        self._chores = threading.Lock()
        _live.add(self)
        store.register_executor(self.executor_id)
        self._listener: Optional[Listener] = None
        self._quietly(self._relisten)  # a server that will not listen: the checks poll instead
        self._every = POLL_INTERVAL if self._listener is None else NOTIFIED_EVERY
        self._thread = threading.Thread(target=self._run, name="localabort-watch", daemon=True)
        start_thread(self._thread)

    def add(self, task_id: str, on_deadline: Callable[[], None]) -> Watched:
        """Watch ``task_id`` from now on (read at once: an abort asked before it started is seen at the first check)."""
        watched = Watched(task_id, on_deadline)
        with self._lock:  # first: a notification that comes during the read below finds it
            self._running[task_id] = watched
        found = self.store.aborting([task_id])
        if task_id in found:
            watched.aborted, watched.terminate_at = True, found[task_id]
        return watched

    def remove(self, watched: Watched) -> None:
        with self._lock:
            self._running.pop(watched.task_id, None)

    def look(self, now: float) -> None:
        """From a task's check, once ``next_look`` (monotonic) has come: read the store for this process's running
        tasks (see the module): every ``POLL_INTERVAL`` (SQLite), or once the listening socket has a notification
        (PostgreSQL: a ``select`` every ``NOTIFIED_EVERY`` s).
        """
        self.next_look = self.looked = now + self._every
        if not self._busy.acquire(blocking=False):  # another thread reads for all of us
            return
        try:
            if self._listener is None or self._notified() or now >= self._next_read:
                self._next_read = now + FALLBACK
                self._read()
        finally:
            self._busy.release()

    def stop(self) -> None:
        """End the watch: its thread, its listening connection, its registration. (A process's watch lives as long.)"""
        self._stop.set()
        self._thread.join()
        _live.discard(self)
        if self._listener is not None:
            self._listener.close()
        self._quietly(lambda: self.store.close_executor(self.executor_id))

    def _run(self) -> None:
        heartbeat_at = recover_at = 0.0
        while not self._stop.is_set():
            try:
                heartbeat_at, recover_at = self._turn(heartbeat_at, recover_at)
            except Exception:  # nothing may end the watch: the next turn tries again
                self._stop.wait(THREAD_POLL)

    def _turn(self, heartbeat_at: float, recover_at: float) -> Tuple[float, float]:
        """One turn of the thread: its chores when due, a read for tasks that do not check, then a wait."""
        now = time.monotonic()
        with self._chores:  # not under ``_busy``: a check must not wait for them to read
            if now >= heartbeat_at:
                self._quietly(lambda: self.store.heartbeat(self.executor_id))
                heartbeat_at = now + HEARTBEAT
            if now >= recover_at:
                self._quietly(self.store.recover_dead_executors)
                if self._listener is None and self.store.postgres:
                    self._quietly(self._relisten)  # lost, or refused: tried again here, never in a check
                recover_at = now + RECOVER_EVERY
        # While tasks check, they read, and this thread (starved of the GIL by a task that spins) would
        # only hold ``_busy`` from them.
        if time.monotonic() > self.looked + THREAD_POLL or self._first_deadline() <= time.monotonic():
            with self._busy:
                if self._listener is not None:
                    self._notified()  # read, even idle: unread notifications pile up on the server
                self._read()
        self._stop.wait(max(0.01, min(heartbeat_at, recover_at, time.monotonic() + THREAD_POLL,
                                      self._first_deadline()) - time.monotonic()))  # fmt: skip
        return heartbeat_at, recover_at

    def _first_deadline(self) -> float:
        """The earliest ``terminate_at`` of a running task, on the monotonic clock (``inf`` if none)."""
        with self._lock:
            deadlines = [w.terminate_at for w in self._running.values() if w.terminate_at is not None]
        return time.monotonic() + min(deadlines) - time.time() if deadlines else float("inf")

    def _notified(self) -> bool:
        """Take the notifications that came since the last look; whether the store must be read. Under ``_busy``.

        A notification names its task: a running one gets its flag (and the
        deadline asked) without a query. One about any number of tasks, or a
        listener that failed, asks for a read.
        """
        assert self._listener is not None
        try:
            heard = self._listener.pending()
        except Exception:  # the connection dropped: the checks poll until the thread listens again
            lost, self._listener, self._every = self._listener, None, POLL_INTERVAL
            self._quietly(lost.close)
            return True
        now = time.time()
        for task_id, at in heard:
            if task_id == ANY:
                return True
            with self._lock:
                watched = self._running.get(task_id)
            if watched is not None:
                self._mark(watched, at, now)
        return False

    def _relisten(self) -> None:
        self._listener = self.store.listener()
        if self._listener is not None:
            self._every = NOTIFIED_EVERY

    def _read(self) -> None:
        """One read of the aborts of every running task; sets their flags (and kills past a deadline)."""
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
            self._mark(watched, at, now)

    @staticmethod
    def _mark(watched: Watched, terminate_at: Optional[float], now: float) -> None:
        """``watched`` has an abort asked, with ``terminate_at`` (the earliest deadline asked counts)."""
        if terminate_at is not None:
            earlier = watched.terminate_at
            watched.terminate_at = terminate_at if earlier is None else min(earlier, terminate_at)
        watched.aborted = True
        if watched.terminate_at is not None and now >= watched.terminate_at:
            try:
                watched.on_deadline()
            except Exception:  # it kills this process whatever happens; a failure here must not end a check
                pass

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
        w._chores.acquire()
        w._busy.acquire()


def _after_fork_in_parent() -> None:
    for w in _held:
        w._busy.release()
        w._chores.release()
    _held.clear()


def _after_fork_in_child() -> None:
    global _watches_lock, _live
    _watches.clear()
    _watches_lock = threading.Lock()
    _live = weakref.WeakSet()
    _held.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
