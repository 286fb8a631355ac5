"""What a test leaves behind: child processes, threads, file descriptors, named semaphores.

``conftest.no_leaks`` (autouse) takes a ``Snapshot`` before each test and
fails the test if a later one holds more, after giving what is ending a few
seconds to end (a worker reaped, a thread joined). It is what Dask's
``check_process_leak`` and ``check_thread_leak`` do, on what a process pool
can leak. An open SQLite connection is a file descriptor on its database
(and its WAL files), and is named as such.

What a module-scoped fixture hands a test is set up before the snapshot,
so it is not counted. What lives for the whole session once started (the
forkserver and the resource tracker of ``multiprocessing`` and the arenas
of its shared-memory heap, tqdm's monitor thread, anyio's idle worker
threads, the handles of ``Store.open``'s cache, which are disposed before
each look) is started first or left out, by name.
"""

from __future__ import annotations

import os
import threading
import time
from typing import FrozenSet, List, NamedTuple, Tuple

#: Threads a library keeps for the session once it started them: not a test's leak.
SESSION_THREADS = ("TMonitor", "AnyIO worker thread", "asyncio_")
#: Processes that live for the session once started: ``multiprocessing``'s own helpers.
SESSION_PROCESSES = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
#: Descriptors kept for the session: ``multiprocessing``'s shared-memory heap keeps small arenas for reuse, and
#: Celery's result consumer makes its event loop's epoll on the first ``get()`` (localabort uses none).
SESSION_FILES = ("/dev/shm/pym-", "anon_inode:[eventpoll]")
#: Seconds a test's leftovers get to end before they count as leaked.
GRACE = 5.0


class Snapshot(NamedTuple):
    processes: FrozenSet[Tuple[int, str]]  # (pid, command line): a reused pid is another process
    threads: FrozenSet[Tuple[int, str]]  # (ident, name)
    fds: FrozenSet[Tuple[int, str]]  # (number, what it points at)
    semaphores: FrozenSet[str]  # /dev/shm/sem.* of this machine

    def leaked_since(self, before: Snapshot) -> List[str]:
        """What this snapshot holds that ``before`` did not, in words."""
        found = [f"a child process {pid} ({cmd})" for pid, cmd in sorted(self.processes - before.processes)]
        found += [f"a thread {name!r}" for _, name in sorted(self.threads - before.threads)]
        found += [_fd_words(number, target) for number, target in sorted(self.fds - before.fds)]
        found += [f"a named semaphore {name}" for name in sorted(self.semaphores - before.semaphores)]
        return found


def snapshot() -> Snapshot:
    return Snapshot(_processes(), _threads(), _fds(), _semaphores())


def leaked(before: Snapshot) -> List[str]:
    """What was started since ``before`` and is still there after ``GRACE`` seconds."""
    deadline = time.monotonic() + GRACE
    while True:
        found = snapshot().leaked_since(before)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _processes() -> FrozenSet[Tuple[int, str]]:
    children = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                children.update(int(pid) for pid in f.read().split())
        except OSError:  # a thread that has just ended
            continue
    found = set()
    for pid in children:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue  # exited: reaping it is its Popen's business (and Python warns of that)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if not any(name in cmd for name in SESSION_PROCESSES):
            found.add((pid, cmd[:160]))
    return frozenset(found)


def _threads() -> FrozenSet[Tuple[int, str]]:
    return frozenset(
        (thread.ident or 0, thread.name)
        for thread in threading.enumerate()
        if thread.is_alive() and not thread.name.startswith(SESSION_THREADS)
        and type(thread).__name__ not in SESSION_THREADS
    )  # fmt: skip


def _fds() -> FrozenSet[Tuple[int, str]]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, now closed
            continue
        if not target.startswith(SESSION_FILES):
            found.add((int(name), target))
    return frozenset(found)


def _semaphores() -> FrozenSet[str]:
    try:
        return frozenset(name for name in os.listdir("/dev/shm") if name.startswith("sem."))
    except OSError:
        return frozenset()


def _fd_words(number: int, target: str) -> str:
    if target.endswith((".sqlite", ".db", "-wal", "-shm")) or ".sqlite" in target:
        return f"an open SQLite connection (descriptor {number} on {target})"
    return f"a file descriptor {number} ({target})"
