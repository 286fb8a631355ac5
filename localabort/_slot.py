"""One worker slot: a worker process, the parent's end of its pipe, its abort words and the jobs it holds.

Process plumbing only (start, feed, stop, kill, reap): which job goes
where, and what its outcome means, is the scheduler's. A slot keeps its
number, and so its words in the shared array, when its process is
replaced; the replacement is a new ``Slot`` with a new hand-over lock.
A slot holds up to ``DEPTH`` jobs: ``job``, the one its worker runs, and
``ahead``, those sent ahead, in order, so the worker never waits between
two jobs (how many: ``Scheduler.ahead``).
"""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing.connection
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Deque, List, Optional, Set, Tuple, Union

from ._messages import STOP
from ._procs import exit_words
from ._words import AbortWords
from ._worker import WorkerSetup, worker_main

if TYPE_CHECKING:
    from multiprocessing.context import DefaultContext, ForkContext, ForkServerContext, SpawnContext

    from ._jobs import Job
    from ._words import Array

    #: A ``multiprocessing`` context: what ``multiprocessing.get_context()`` returns.
    Context = Union[DefaultContext, ForkContext, ForkServerContext, SpawnContext]

__all__ = ["READ_SIZE", "STOP_GRACE", "Slot", "split_messages"]

#: Seconds a worker has to exit after being asked before it is killed.
STOP_GRACE = 5.0
#: Bytes ``Slot.messages`` asks of the pipe in one read: more than its socket pair holds at once (about 200 KiB).
READ_SIZE = 256 * 1024


class Slot:
    """One worker process and what the parent knows of it."""

    def __init__(self, ctx: Context, index: int, array: Array, setup: WorkerSetup) -> None:
        self.index = index
        self.job: Optional[Job] = None  # the job its worker runs, or None when idle
        self.ahead: Deque[Job] = collections.deque()  # the jobs sent ahead, to run after it, in order
        self.reserved = False  # a user thread is sending it a job (``Scheduler._start_at_once``)
        self.gone = False  # its worker has died: the manager is replacing it (``Scheduler.retire``)
        self.direct_at = -math.inf  # when a user thread last sent it a job (``Scheduler._idle_slot``)
        self._sending = threading.Lock()  # a user thread's send and the manager's close of the pipe
        self.ready = False  # the worker said it has started
        self.calls = 0  # jobs sent to this worker (it exits after max_tasks_per_child)
        # The seqs of jobs taken back from it unread (``Scheduler.unstick``): their calls are still on its pipe,
        # their words in use, until it answers each unrun.
        self.taken_back: Set[int] = set()
        # Started with SIGINT and SIGHUP blocked (a mask a child inherits, through exec too), so a Ctrl-C or a
        # closing terminal that lands while it starts up waits until the worker has set them aside, as CPython
        # starts its resource tracker. The lock may start that tracker, and the process the fork server: each
        # keeps SIGHUP blocked (CPython's own unblock only SIGINT and SIGTERM), so a closed terminal, which
        # signals the whole process group, does not kill them under the batch's graceful stop. The worker sets
        # its own mask as it starts: the manager's thread, which starts the ones that replace the dead, blocks
        # every signal (``start_thread``), but SIGCHLD, which a fork server started here waits on.
        held = {signal.SIGINT, signal.SIGHUP}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        try:
            self.words = AbortWords(array, index, ctx.Lock())
            parent_end, child_end = ctx.Pipe(duplex=True)
            self.process = ctx.Process(
                target=worker_main,
                args=(child_end, self.words, setup),
                name=f"localabort-worker-{index}",
                daemon=False,
            )
            signal.pthread_sigmask(signal.SIG_BLOCK, held)  # again: starting the resource tracker unblocks SIGINT
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        self.conn: multiprocessing.connection.Connection = parent_end
        self.sentinel: int = self.process.sentinel
        self.pid: Optional[int] = self.process.pid
        self.exitcode: Optional[int] = None  # once reaped
        self._readable = select.poll()  # ``Connection.poll`` makes a selector each time it is asked
        self._unread = bytearray()  # what ``messages`` read of a message not yet whole
        self._readable.register(parent_end.fileno(), select.POLLIN)

    def _readable_now(self) -> bool:
        """Whether the worker's pipe holds bytes, or has ended: at once, without waiting."""
        return bool(self._readable.poll(0))

    def messages(self) -> Tuple[List[bytes], bool]:
        """The messages the worker has sent whole so far, without waiting; and whether its pipe has ended.

        One read takes every message waiting (replies come many at a time
        when jobs are short): ``Connection.recv_bytes`` would make a poll
        and two reads for each. The pipe's framing is ``multiprocessing``'s
        (a 4-byte size; -1 and 8 more bytes for a message of 2 GiB or more);
        a message not yet whole stays in ``_unread`` until its rest comes.
        """
        unread, fd = self._unread, self.conn.fileno()
        ended = False
        while self._readable_now():
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                ended = True
                break
            unread += chunk
            if len(chunk) < READ_SIZE:  # nothing more waits
                break
        return split_messages(unread), ended

    def send(self, message: bytes) -> None:
        """Send ``message`` to the worker; ``OSError`` if the pipe is closed or the worker gone."""
        with self._sending:
            self.conn.send_bytes(message)

    def ask_to_stop(self) -> None:
        """Ask an idle worker to exit; ignore a worker that is already gone."""
        try:
            self.conn.send_bytes(STOP)
        except OSError:
            pass

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the worker and every process its tasks started (its process group); ignore them gone."""
        pid = self.pid
        if pid is None or self.conn.closed:  # reaped: its pid, and its group's, may be another's by now
            return
        try:
            # The worker leads a group of its own (``worker_main``). While one of its processes lives, the
            # system keeps the group's number, so this never reaches another process, even once it is reaped.
            os.killpg(pid, sig)
        except ProcessLookupError:  # none left, or the worker has not made its group yet
            if not self._exited():  # not reaped: the pid is still the worker's
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        except PermissionError:  # pragma: no cover - a process of its group changed user
            pass

    def ended(self) -> bool:
        """Whether the worker process has exited, by its pid, not its sentinel.

        A process the task started, forked with the worker's file
        descriptors, holds the sentinel open after the worker is gone; the
        exit is read without reaping it, so ``kill`` still reaches its group.
        """
        pid = self.pid
        if self.conn.closed:
            return True
        if pid is None or not hasattr(os, "waitid"):  # pragma: no cover - macOS has no waitid
            return self._exited()
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            # Reaped already, or not a child of this process (forkserver): then the fork server's report on the
            # sentinel, which no task holds, says.
            return self._exited()

    def _exited(self) -> bool:
        """Whether ``multiprocessing`` has seen the worker exit; a slot reaped meanwhile (another thread) has."""
        try:
            return self.process.exitcode is not None
        except ValueError:  # the process object was closed: reaped
            return True

    def reap(self, timeout: float = STOP_GRACE) -> None:
        """Wait for the worker to exit (killing it after ``timeout``), kill what its tasks left, close the pipe.

        Once only: a slot reaped already is left alone (its pid may be another process's by now).
        """
        if self.conn.closed:
            return
        deadline = time.monotonic() + timeout
        while not self.ended() and time.monotonic() < deadline:
            multiprocessing.connection.wait([self.sentinel], min(0.05, max(0.0, deadline - time.monotonic())))
        self.kill()  # the worker, if it is still running, and every process left in its group
        self.process.join()  # by its pid (no timeout: no sentinel involved)
        self.exitcode = self.process.exitcode
        # What the worker held goes now, not when the executor is collected: its pipe, its sentinel, and
        # (``release``) its named semaphore, so a script that keeps its executor after shutdown() leaks none.
        with self._sending:
            self.conn.close()
        self.process.close()
        self.words.release()

    def exit_reason(self) -> str:
        """How the worker process ended, in words."""
        return exit_words(self.exitcode if self.conn.closed else self.process.exitcode)


def split_messages(unread: bytearray) -> List[bytes]:
    """The whole messages at the start of ``unread``, taken out of it; a message not yet whole stays.

    ``multiprocessing``'s framing: a 4-byte signed big-endian size, or -1
    and an 8-byte size. Any other negative size is a broken pipe (``OSError``).

    >>> unread = bytearray(b"\\x00\\x00\\x00\\x02hi\\x00\\x00\\x00\\x05wor")
    >>> split_messages(unread), bytes(unread)
    ([b'hi'], b'\\x00\\x00\\x00\\x05wor')
    """
    found: List[bytes] = []
    at, end = 0, len(unread)
    while end - at >= 4:
        size, head = int.from_bytes(unread[at : at + 4], "big", signed=True), 4
        if size == -1:
            if end - at < 12:
                break
            size, head = int.from_bytes(unread[at + 4 : at + 12], "big"), 12
        elif size < 0:
            raise OSError(f"a worker's pipe is garbled (a message of {size} bytes)")
        if end - at - head < size:
            break
        found.append(bytes(unread[at + head : at + head + size]))
        at += head + size
    del unread[:at]
    return found
