"""Process plumbing: start, feed, stop and kill the worker processes.

Scheduling (which job goes where, and what its outcome means) belongs to
the executor; this module only owns processes and their pipes. Each worker
sits in a numbered *slot*; a slot keeps its number, and so its word in the
shared abort-flag array, when its process is replaced.
"""

from __future__ import annotations

import multiprocessing.connection
import signal
from typing import Any, Optional

from ._worker import worker_main

__all__ = ["Slot"]

#: Seconds a worker has to exit after being asked before it is killed.
STOP_GRACE = 5.0


class Slot:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, index: int, flags: Any, store_url: str) -> None:
        self.index = index
        self.job: Any = None  # the job this worker runs, or None when idle
        self.ready = False  # the worker said it has started
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=worker_main,
            args=(child_end, flags, index, store_url),
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
