"""The state the manager shares with user threads, and what those threads do to it.

Submitting, aborting, cancelling and shutting down happen in the caller's
thread: each takes the lock briefly, changes the shared state, and writes
to the store what must be recorded at once (an abort request, a task ended
before it started). Everything else is the manager thread's (``_manager``).
``Control`` is also the futures' ``Controller``: ``future.abort()`` and
``future.cancel()`` land here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import threading
import time
import weakref
from typing import Any, Deque, Dict, List, Optional

from ._errors import TaskAborted
from ._future import AbortableFuture
from ._jobs import QUEUED, RUNNING, SENT, Job, resolve
from ._states import ABORTED
from ._store import Store

__all__ = ["Control"]


class Control:
    """The queue, the unfinished jobs and the abort flags, under one lock."""

    def __init__(self, store: Store, executor_id: str, flags: Any) -> None:
        self.executor_id = executor_id
        self._store = store
        self._flags = flags  # a word per job a worker holds: the seq of the job aborted there (and claim words)
        self._lock = threading.Lock()
        self._queue: Deque[Job] = collections.deque()
        self._jobs: Dict[str, Job] = {}  # every job not finished, by id
        self._dirty: Dict[str, Job] = {}  # jobs whose row the store must get
        self._abort_rows: List[Dict[str, Any]] = []  # abort requests to record with the next write
        self._seq = itertools.count(1)
        self._shutdown = self._terminating = False
        self.broken: Optional[BaseException] = None
        self._wake_r, self._wake_w = os.pipe()
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)
        self._wake_pending = False
        # Waiters wait on this, not on Thread.join(): up to Python 3.11, a join() interrupted by
        # Ctrl-C marks the thread stopped while it runs, and every later join() returns at once.
        self.stopped = threading.Event()

    def next_seq(self) -> int:
        return next(self._seq)

    def enqueue(self, job: Job) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an Executor after shutdown()")
            if self.broken is not None:
                raise concurrent.futures.BrokenExecutor(f"the executor stopped: {self.broken}")
            self._queue.append(job)
            self._jobs[job.id] = job
            self._dirty[job.id] = job
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._wake()

    def fail_now(self, job: Job) -> None:
        """Store and resolve a job that ended before it was queued."""
        self._store.write([self._row(job)])
        resolve([job])

    def abort_all(self) -> int:
        with self._lock:
            asked = [job for job in self._jobs.values() if not job.abort_requested]
            ended = [job for job in asked if self._mark_aborted(job)]
            rows = [self._row(job, abort=True) for job in asked]
        self._store.write([self._row(job) for job in ended], aborts=rows)
        resolve(ended)
        return len(asked)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: List[Job] = []
        recalled: List[Job] = []
        with self._lock:  # one hold: the manager cannot send a job on between our look and our cancel
            self._shutdown = True
            if cancel_futures:
                for job in list(self._jobs.values()):
                    if job.status == QUEUED and not job.future.running():
                        self._end_unrun(job, "cancelled")
                        cancelled.append(job)
                    elif job.status == SENT and job.slot.recall(self._flags, job.seq, job.flag, abort_if_claimed=False):
                        self._end_unrun(job, "cancelled")  # sent ahead, not claimed: it has not started either
                        recalled.append(job)
            rows = [self._row(job) for job in cancelled + recalled]
        self._store.write(rows)
        for job in cancelled:
            _notify_cancelled(job.future)
        resolve(recalled)
        self._wake()
        if wait:
            self.stopped.wait()

    def _mark_aborted(self, job: Job) -> bool:
        """Under the lock: flag ``job`` aborted; end it if it has not started. Return whether it ended.

        A job sent ahead to a busy worker has not started unless that worker
        claimed it; recalled in time, it stays the slot's next job until the
        worker answers it unrun.
        """
        job.abort_requested = job.future._abort_requested = True
        if job.status == QUEUED or (job.status == SENT and job.slot.recall(self._flags, job.seq, job.flag)):
            self._end_unrun(job, "aborted")
            return True
        if job.status in (RUNNING, SENT):  # it runs (or was claimed), and sees the flag at its next check
            self._flags[job.flag] = job.seq
        return False

    def _queue_head(self) -> Optional[Job]:
        """Under the lock: the first job still queued, dropping those ended while queued (aborted, cancelled)."""
        while self._queue and self._queue[0].status != QUEUED:
            self._queue.popleft()
        return self._queue[0] if self._queue else None

    def _end_unrun(self, job: Job, how: str) -> None:
        """Under the lock: end ``job``, which never started, ABORTED. The caller writes its row."""
        job.end(ABORTED, TaskAborted(f"task {job.id} {how} before it started", task_id=job.id))
        del self._jobs[job.id]

    def _abort(self, future: AbortableFuture) -> bool:  # Controller
        with self._lock:
            job = self._jobs.get(future.id)
            if job is None:
                return False
            if job.abort_requested:
                return True
            ended = self._mark_aborted(job)
            row = self._row(job, abort=True)
        self._store.write([row] if ended else [], aborts=[row])
        if ended:
            resolve([job])
        return True

    def _cancel(self, future: AbortableFuture) -> bool:  # Controller
        with self._lock:
            job = self._jobs.get(future.id)
            if job is None or job.status != QUEUED or future.running():  # running: sent to a worker once
                return future.cancelled()
            self._end_unrun(job, "cancelled")
            row = self._row(job)
        self._store.write([row])
        _notify_cancelled(future)
        return True

    def _wake(self) -> None:
        os.write(self._wake_w, b"\0")

    def _row(self, job: Job, abort: bool = False) -> Dict[str, Any]:
        done, total = job.progress if job.progress is not None else (None, None)
        row = {
            "id": job.id, "executor_id": self.executor_id, "name": job.name, "key": job.key, "state": job.state,
            "submitted_at": job.submitted_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "progress_done": done, "progress_total": total, "result": job.result, "traceback": job.traceback,
        }  # fmt: skip
        if abort:
            row["abort_requested_at"] = time.time()
        return row


def _notify_cancelled(future: AbortableFuture) -> None:
    """Cancel the future of a job ended unrun (its row is stored), as ``Future.cancel`` does."""
    future._la_state = ABORTED
    concurrent.futures.Future.cancel(future)
    future.set_running_or_notify_cancel()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
