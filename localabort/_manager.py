"""The manager: the one thread that talks to the workers, and the state it shares.

It owns the queue, the unfinished jobs and the worker slots, under one
lock that user threads take only briefly (to enqueue, abort or cancel).
Each loop it:

1. waits on the wake pipe, the pipes of busy workers and every worker's
   process sentinel (a sentinel is ready when the process has ended);
2. reads replies, and replaces dead workers, failing their job with
   ``WorkerLost`` (or ``TimeLimitExceeded`` when it killed them itself);
3. reads the store for aborts other processes asked for, while jobs run;
4. sends queued jobs to idle workers (before any store write, so the
   workers run while the store is written);
5. writes every changed row in one transaction (group commit), then
   resolves the futures of finished jobs: a final state is stored before
   anyone can see it.

What user threads do to the shared state (submit, abort, cancel, shut
down) is in ``_control``, the base class.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing.connection
import os
import pickle
import shutil
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ._control import Control
from ._errors import TaskAborted, TimeLimitExceeded, WorkerLost
from ._jobs import DONE, QUEUED, RUNNING, SENT, Job, resolve
from ._pool import DEPTH, Slot
from ._states import ABORTED, FAILURE, STARTED
from ._store import Store

__all__ = ["Manager"]

_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Seconds a changed row may wait for the next store write while workers are busy.
FLUSH_INTERVAL = 0.002
#: Workers in a row that may die before they start before the executor gives up.
MAX_START_FAILURES = 3
#: The largest pickled result the store takes (SQLite refuses values over 10**9 bytes).
MAX_RESULT_BYTES = 900_000_000


class Manager(Control):
    """The thread that drives the workers, on the state it shares with user threads."""

    def __init__(
        self, store: Store, executor_id: str, ctx: Any, max_workers: int, poll_interval: float,
        tmpdir: Optional[str],
    ) -> None:  # fmt: skip
        flags = ctx.RawArray("q", 2 * max_workers * DEPTH)  # the abort words, then as many claim words
        super().__init__(store, executor_id, flags)
        self._ctx = ctx
        self._poll_interval = poll_interval
        self._tmpdir = tmpdir
        self._slots = [Slot(ctx, i, self._flags, store.url) for i in range(max_workers)]
        self._next_poll = 0.0
        self._start_failures = 0
        self._unresolved: List[Job] = []  # finished jobs waiting for the next store write
        self._flush_due = float("inf")
        self._thread = threading.Thread(target=self._manage, name="localabort-manager", daemon=True)
        self._thread.start()

    def terminate(self) -> None:
        """Kill every worker now; their tasks end ABORTED."""
        with self._lock:
            self._terminating = self._shutdown = True
            slots = list(self._slots)
        for slot in slots:
            slot.kill()
        self.stopped.wait()

    def _manage(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # a store or pool failure: fail what is left, loudly
            self._break(exc)
        finally:
            try:
                self._close()
            finally:
                self.stopped.set()

    def _step(self) -> bool:
        """One loop of the manager; returns ``False`` when it is time to stop."""
        waitables: Dict[Any, Optional[Slot]] = {self._wake_r: None}
        busy = False
        for slot in self._slots:
            waitables[slot.sentinel] = slot
            if slot.job is not None or not slot.ready:
                waitables[slot.conn] = slot
            busy = busy or slot.job is not None
        # Never wait without a timeout while work is queued: a lost wake-up then costs one poll, not a hang.
        timeout = self._timeout() if busy or self._queue else None
        ready = multiprocessing.connection.wait(list(waitables), timeout)
        finished: List[Job] = []
        for obj in ready:
            owner = waitables[obj]
            if owner is None:
                # Drain first, then clear: a submit after the clear writes a new byte; one before it
                # is already queued, and this loop dispatches it. (The other order loses wake-ups.)
                os.read(self._wake_r, 65536)
                with self._lock:
                    self._wake_pending = False
            elif self._slots[owner.index] is owner:  # not replaced earlier in this loop
                if obj is owner.conn:
                    self._receive(owner, finished)
                else:
                    self._replace(owner, finished)
        now = time.monotonic()
        if busy and now >= self._next_poll:
            self._next_poll = now + self._poll_interval
            self._poll_aborts(finished)
        self._enforce_limits(now)
        self._unresolved += finished
        if self._unrecorded_job_waits():
            self._commit()  # a task never starts before the store knows it
        self._send(self._dispatch())
        # Group commit: write while workers run, at most FLUSH_INTERVAL after a change,
        # and at once when no worker is busy (no reply is coming to share the write with).
        if self._dirty or self._abort_rows:
            self._flush_due = min(self._flush_due, now + FLUSH_INTERVAL)
            if now >= self._flush_due or all(s.job is None for s in self._slots):
                self._commit()
                self._send(self._dispatch())  # jobs this write recorded may start now
        with self._lock:
            return not (self._shutdown and not self._jobs and all(s.job is None for s in self._slots))

    def _timeout(self) -> float:
        soonest = min(
            (min(s.job.soft_deadline, s.job.hard_deadline) for s in self._slots if s.job is not None),
            default=float("inf"),
        )
        return max(0.0, min(self._next_poll, soonest, self._flush_due) - time.monotonic())

    def _receive(self, slot: Slot, finished: List[Job]) -> None:
        """Read every message the worker in ``slot`` has sent."""
        try:
            while True:
                self._handle(slot, pickle.loads(slot.conn.recv_bytes()), finished)
                if not slot.conn.poll():
                    return
        except (EOFError, OSError):
            self._replace(slot, finished)

    def _handle(self, slot: Slot, message: Tuple[Any, ...], finished: List[Job]) -> None:
        if message[0] == "ready":
            slot.ready = True
            self._start_failures = 0
            if slot.job is not None:  # sent before the worker had started: its clock starts now
                self._start_clock(slot.job)
            return
        job = slot.job
        if job is None or message[1] != job.seq:  # pragma: no cover - a reply for no job
            return
        if job.status == DONE:  # recalled before its worker reached it: ended already
            if message[0] == "r":
                self._promote(slot)
            return
        if message[0] == "p":
            job.progress = job.future._la_progress = (message[2], message[3])
            with self._lock:
                self._dirty[job.id] = job
        else:
            _, _, state, blob, tb, progress = message
            self._promote(slot)
            if len(blob) > MAX_RESULT_BYTES:
                state, tb = FAILURE, None
                blob = _dumps(ValueError(
                    f"the result of {job.name} [{job.id}] is {len(blob):,} bytes pickled, over the store's limit of "
                    f"{MAX_RESULT_BYTES:,}; write large data to a file and return its path"
                ), _PROTOCOL)  # fmt: skip
            self._finish(job, state, blob, tb, progress, finished)

    def _promote(self, slot: Slot) -> None:
        """The worker in ``slot`` answered its job and went straight on to the one sent after it."""
        with self._lock:
            slot.job, slot.next = slot.next, None
            if slot.job is not None and slot.job.status != DONE:
                self._start(slot.job)

    def _finish(self, job: Job, state: str, blob: Optional[bytes], tb: Optional[str], progress: Any,
                finished: List[Job]) -> None:  # fmt: skip
        with self._lock:
            job.end(state)
            job.result, job.traceback, job.blob = blob, tb, None
            if progress is not None:
                job.progress = progress
            self._jobs.pop(job.id, None)
            self._dirty[job.id] = job
        finished.append(job)

    def _replace(self, slot: Slot, finished: List[Job]) -> None:
        """The worker in ``slot`` is gone: fail its job and start a new worker."""
        try:
            while slot.conn.poll():  # what it sent before it died
                self._handle(slot, pickle.loads(slot.conn.recv_bytes()), finished)
        except (EOFError, OSError):
            pass
        slot.reap(timeout=1.0)
        job, slot.job = slot.job, None
        if slot.next is not None and slot.next.status != DONE:  # sent, never reached: it runs on the next worker
            self._requeue(slot.next, finished)
        slot.next = None
        if job is not None and job.status == DONE:  # recalled unrun: ended already
            job = None
        start_failure = None
        if not slot.ready and not self._terminating:
            self._start_failures += 1
            start_failure = (
                f"a worker (pid {slot.pid}) {slot.exit_reason()} before it started; under spawn and forkserver "
                "each worker imports the main module, so a script must keep its code under "
                "`if __name__ == '__main__':`"
            )
        if job is not None:
            if self._terminating:
                state, exc = ABORTED, job.lost or TaskAborted(f"task {job.id} terminated", task_id=job.id)
            else:
                state = FAILURE
                exc = job.lost or WorkerLost(
                    start_failure or f"the worker (pid {slot.pid}) running {job.name} [{job.id}] {slot.exit_reason()}"
                )
            self._finish(job, state, _dumps(exc, _PROTOCOL), None, None, finished)
        if self._start_failures >= MAX_START_FAILURES:
            raise RuntimeError(start_failure)
        with self._lock:
            restart = not self._terminating and not (self._shutdown and not self._queue)
        if restart:
            self._slots[slot.index] = Slot(self._ctx, slot.index, self._flags, self._store.url)

    def _poll_aborts(self, finished: List[Job]) -> None:
        """Honour aborts that other processes recorded in the store."""
        ids = self._store.aborts_requested(self.executor_id)
        with self._lock:
            for task_id in ids:
                job = self._jobs.get(task_id)
                if job is not None and not job.abort_requested and self._mark_aborted(job):
                    self._dirty[job.id] = job
                    finished.append(job)

    def _enforce_limits(self, now: float) -> None:
        for slot in self._slots:
            job = slot.job
            if job is None or job.status == DONE:
                continue
            if now >= job.hard_deadline and job.lost is None:
                job.lost = TimeLimitExceeded(f"{job.name} [{job.id}] ran past its time_limit of {job.time_limit}s")
                slot.kill()
            elif now >= job.soft_deadline:
                job.soft_deadline = float("inf")
                with self._lock:
                    if not job.abort_requested:
                        self._mark_aborted(job)
                        self._abort_rows.append(self._row(job, abort=True))

    def _unrecorded_job_waits(self) -> bool:
        """Whether an idle worker waits for a job whose row is not in the store yet."""
        with self._lock:
            head = self._queue_head()
            return head is not None and not head.recorded and any(s.job is None for s in self._slots)

    @staticmethod
    def _send(messages: List[Tuple[Slot, bytes]]) -> None:
        for slot, message in messages:
            try:
                slot.send(message)
            except OSError:  # the worker died; its sentinel says so next loop
                pass

    @staticmethod
    def _start_clock(job: Job) -> None:
        """Time limits count from when a started worker has the job, not from a worker's own start-up."""
        now = time.monotonic()
        if job.soft_time_limit is not None:
            job.soft_deadline = now + job.soft_time_limit
        if job.time_limit is not None:
            job.hard_deadline = now + job.time_limit

    def _commit(self) -> None:
        """Write every changed row, then resolve the futures of the jobs that finished."""
        self._flush()
        self._flush_due = float("inf")
        resolve(self._unresolved)
        self._unresolved = []

    def _dispatch(self) -> List[Tuple[Slot, bytes]]:
        """Give recorded queued jobs to idle workers, then to busy ones as their next; return the messages."""
        sends: List[Tuple[Slot, Tuple[Any, ...]]] = []
        with self._lock:
            if self._terminating:
                return []
            for slot in [s for s in self._slots if s.job is None] + [s for s in self._slots if s.job is not None]:
                if slot.next is not None:
                    continue
                head = self._queue_head()
                if head is None or not head.recorded:  # not recorded: wait for the next write
                    break
                job = self._queue.popleft()
                job.slot, job.flag = slot, slot.take_flag()
                if slot.job is None:
                    slot.job = job
                    self._start(job)
                else:
                    slot.next, job.status = job, SENT
                # Under the lock, as its state is: an abort or a shutdown may take the job back the moment
                # the lock is free. ``ahead``: not reported STARTED, so the worker must claim it first.
                if not job.future.running():  # a job sent again after its worker died is running already
                    job.future.set_running_or_notify_cancel()
                sends.append((slot, (job.seq, job.flag, job.status == SENT, job.id, job.name, job.blob, job.chunked)))
        return [(slot, _dumps(message, _PROTOCOL)) for slot, message in sends]

    def _start(self, job: Job) -> None:
        """``job`` is now its worker's current one (call with the lock held)."""
        job.status = RUNNING
        if job.abort_requested:  # the worker skips it, or stops at its first check: no STARTED row
            return
        job.state = job.future._la_state = STARTED
        job.started_at = time.time()
        if job.slot.ready:
            self._start_clock(job)
        self._dirty[job.id] = job

    def _requeue(self, job: Job, finished: List[Job]) -> None:
        """A job sent to a worker that died before reaching it: queue it first again, or end it."""
        with self._lock:
            if self._terminating or job.abort_requested:
                self._end_unrun(job, "aborted")
                self._dirty[job.id] = job
                finished.append(job)
            else:
                job.status, job.slot = QUEUED, None
                self._queue.appendleft(job)

    def _flush(self) -> None:
        with self._lock:
            if not self._dirty and not self._abort_rows:
                return
            jobs = list(self._dirty.values())
            rows = [self._row(job) for job in jobs]
            aborts, self._dirty, self._abort_rows = self._abort_rows, {}, []
        self._store.write(rows, aborts=aborts)
        for job in jobs:
            job.recorded = True

    def _break(self, exc: BaseException) -> None:
        """The manager cannot go on: settle every future, then stop the workers.

        Jobs that finished keep their outcome; the others fail with
        ``BrokenExecutor``, whose message says why. Their rows are written
        if the store still takes writes.
        """
        error = concurrent.futures.BrokenExecutor(f"the localabort executor stopped: {exc}")
        with self._lock:
            self.broken, self._shutdown = exc, True
            jobs = {job.id: job for job in [*self._unresolved, *self._dirty.values(), *self._jobs.values()]}
            self._jobs.clear()
            self._queue.clear()
            self._dirty.clear()
            self._unresolved = []
            for job in jobs.values():
                if job.status != DONE:
                    job.end(FAILURE, error)
        for slot in self._slots:
            slot.kill()
        try:
            self._store.write([self._row(job) for job in jobs.values()])
        except Exception:  # the store may be what failed; the futures still get their outcome
            pass
        resolve([job for job in jobs.values() if not job.future.done()])

    def _close(self) -> None:
        for slot in self._slots:
            if slot.job is None:
                slot.ask_to_stop()
            else:
                slot.kill()
        for slot in self._slots:
            slot.reap()
        try:
            if self.broken is None:
                self._flush()
                resolve(self._unresolved)
                self._store.close_executor(self.executor_id)
        finally:
            self._store.dispose()  # its pooled connections hold file descriptors; reopened on next use
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
