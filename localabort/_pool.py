"""Process plumbing: start, feed, stop and kill the worker processes.

Scheduling (which job goes where, and what its outcome means) belongs to
the executor; this module only owns processes and their pipes. Each worker
sits in a numbered *slot*; a slot keeps its number, and so its words in the
shared abort-flag array, when its process is replaced. A slot holds up to
``DEPTH`` jobs: the one its worker runs and the one it runs next, so a
worker never waits for the parent between two jobs.
"""

from __future__ import annotations

import multiprocessing.connection
import signal
from typing import Any, Optional

from ._worker import worker_main

__all__ = ["Slot"]

#: Seconds a worker has to exit after being asked before it is killed.
STOP_GRACE = 5.0
#: Jobs a slot holds at once: the running one and the next; each has its own abort-flag word.
DEPTH = 2
#: Seconds the parent waits for a worker's hand-over lock before it takes the job as started.
HANDOVER_WAIT = 1.0


class Slot:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, index: int, flags: Any, store_url: str) -> None:
        self.index = index
        self.job: Any = None  # the job this worker runs, or None when idle
        self.next: Any = None  # the job sent to run after it, or None
        self._turn = 0
        # Guards the hand-over of a job sent ahead: the worker claims it, or the parent recalls it.
        self._handover = ctx.Lock()
        self.ready = False  # the worker said it has started
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=worker_main,
            args=(child_end, flags, self._handover, store_url),
            name=f"localabort-worker-{index}",
            daemon=False,
        )
        self.process.start()
        child_end.close()
        self.conn: multiprocessing.connection.Connection = parent_end
        self.sentinel: int = self.process.sentinel

    @property
    def pid(self) -> Optional[int]:
        pid: Optional[int] = self.process.pid
        return pid

    def send(self, message: bytes) -> None:
        self.conn.send_bytes(message)

    def take_flag(self) -> int:
        """The abort-flag word for the next job sent here: the slot's words in turn.

        At most ``DEPTH`` jobs are in a slot at once, so two of them never share a word.
        """
        self._turn = (self._turn + 1) % DEPTH
        return self.index * DEPTH + self._turn

    def recall(self, flags: Any, seq: int, flag: int, abort_if_claimed: bool = True) -> bool:
        """Take back job ``seq``, sent ahead; return whether its worker will never start it.

        ``flags`` holds the abort words, then as many claim words: a worker
        claims a job sent ahead by writing its ``seq`` there, under the same
        lock, once it has seen no abort. Unclaimed, the job's abort word is
        set, so the worker skips it. Claimed (it runs), the abort word is set
        only if ``abort_if_claimed``. A worker that dies holding the lock
        leaves the job to be ended with its slot.
        """
        if not self._handover.acquire(timeout=HANDOVER_WAIT):
            if abort_if_claimed:
                flags[flag] = seq
            return False
        try:
            claimed = flags[len(flags) // 2 + flag] == seq
            if abort_if_claimed or not claimed:
                flags[flag] = seq
            return not claimed
        finally:
            self._handover.release()

    def ask_to_stop(self) -> None:
        """Ask an idle worker to exit; ignore a worker that is already gone."""
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass

    def kill(self) -> None:
        """Terminate the worker at once (SIGKILL)."""
        if self.process.is_alive():
            self.process.kill()

    def reap(self, timeout: float = STOP_GRACE) -> None:
        """Wait for the process to exit (killing it after ``timeout``) and close the pipe."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.conn.close()

    def exit_reason(self) -> str:
        """How the worker process ended, in words."""
        code = self.process.exitcode
        if code is None:
            return "is still running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"
