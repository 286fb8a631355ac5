"""The scheduler: the executor's one state machine, shared by user threads and the manager thread.

Every change to which job is where happens here, under one lock, whichever
thread makes it: user threads submit, abort, cancel and shut down; the
manager thread (``_manager``) dispatches, promotes, finishes, vacates the
slots of dead workers and drains rows for the store. The manager does the waiting and the I/O
(pipes, processes, the store) and calls in here for each decision.

What guards what. The manager thread also reads some fields without the
lock, as hints: a queue it sees empty while a submit lands costs nothing,
as the submit writes to the wake pipe after it queues.

=========================================  ============  ======================================
field                                      guarded by    written by
=========================================  ============  ======================================
``queue``, ``jobs``, ``keyed``,            ``lock``      user threads (submit, abort, cancel,
``followers``                                            shutdown) and the manager (dispatch,
                                                         vacate, finish)
a job's ``stage``, ``state``, ``slot``,    ``lock``      both, as above; ``take`` turns a
``word``, ``abort_requested``, its                       slot's words only under ``lock``
future's ``_task_state``
``slot.job``, ``slot.ahead``               ``lock``      the manager (dispatch, promote,
                                                         vacate); user threads read a job's
                                                         slot only to reach its words
``dirty``, ``fresh``                       ``lock``      both; the manager drains them
``abort_rows``                             ``lock``      the manager (soft limits); it drains it
``shutting_down``                          ``lock``      user threads (shutdown, terminate);
                                                         the manager when it breaks
``terminating``                            ``lock``      ``terminate``, from a user thread
``abandoned``                              none          ``abandon`` (the garbage collector);
                                                         the manager reads it when woken
``broken``                                 ``lock``      the manager, when it breaks
``wake_pending``                           ``lock``      submit sets it; the manager clears it
                                                         when it drains the wake pipe
a job's ``claimed``                        ``lock``      the manager, once the store holds
                                                         the claim ``take_rows`` chose
``claim_ahead``                            none          the manager, before ``take_rows``
``ahead`` (jobs held ahead per worker)     none          the manager (``timed``); read as a hint
a job's ``progress``, ``result``,          none          the manager only, before the job is
``traceback``, ``lost``, deadlines;                      DONE (and ``end``, under ``lock``)
``slot.ready``
``slots`` (the list)                       none          the manager only (it replaces dead
                                                         workers); ``terminate`` copies it
                                                         under ``lock``
abort and claim words                      see           ``_words``; ``recall`` is called with
                                           ``_words``    ``lock`` held: lock order is ``lock``,
                                                         then a slot's hand-over lock
=========================================  ============  ======================================

A user thread holds ``lock`` only to change state (and, to take back a job
sent ahead, for up to ``HANDOVER_WAIT`` if its worker died holding the
hand-over lock); it writes the rows it must record at once (an abort
request, a job ended unrun) to the store after releasing it. ``Scheduler`` is also the futures' ``Controller``:
``future.abort()`` and ``future.cancel()`` land here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import contextlib
import heapq
import itertools
import math
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple

from ._errors import TaskAborted
from ._future import AbortableFuture
from ._interrupt import deferred
from ._jobs import DONE, QUEUED, RUNNING, SENT, WAITING, Job, Usage, resolve
from ._messages import Call, Calls, encode
from ._outcome import unrun
from ._procs import asker
from ._slot import Slot
from ._states import ABORTED, FAILURE, PENDING, READY_STATES, RECEIVED, STARTED, Progress
from ._words import DEPTH

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["AHEAD_BYTES", "AHEAD_SECONDS", "BACKLOG_ROWS", "Scheduler"]

#: Seconds of short jobs each worker holds ahead of the one it runs (``Scheduler.timed``).
AHEAD_SECONDS = 0.005
#: Bytes of calls each worker holds ahead at most; a larger call goes only to a worker that holds nothing,
#: which reads it at once. The manager sends while the worker works through what it holds, and reads its
#: replies only between sends: calls held past what the pipe holds (about 200 KiB here) would block the
#: manager's send, so its reading, so the worker's replies, so the worker: both for ever. With 127 calls
#: ahead, 4 KB each did; so did one call of 300 KB sent ahead, its worker replying 300 KB.
AHEAD_BYTES = 64 * 1024
#: A worker whose job has run ``STUCK_FACTOR`` times the mean job time, and at least ``STUCK_AFTER`` s, is
#: *stuck*: the jobs sent ahead to it are taken back for the others (``unstick``), and it is sent none more.
STUCK_AFTER = 0.02
STUCK_FACTOR = 4
#: New jobs' rows a store write carries at most, beside its claims and the rows of jobs that moved on
#: (``Scheduler.take_rows``): about 3 ms of SQLite's work, less than the jobs a worker holds ahead.
BACKLOG_ROWS = 100
#: Seconds a worker waits before it takes another job straight from a user thread (``Scheduler._idle_slot``).
DIRECT_EVERY = 0.005

Row = Dict[str, Any]


class Scheduler:
    """The queue, the unfinished jobs, the slots' jobs and the rows owed to the store, under one lock."""

    def __init__(self, store: Store, executor_id: str, max_tasks_per_child: Optional[int] = None) -> None:
        self.store = store
        self.executor_id = executor_id
        self.max_tasks_per_child = max_tasks_per_child
        self.lock = threading.Lock()
        self.queue: Deque[Job] = collections.deque()
        self.jobs: Dict[str, Job] = {}  # every job not finished, by id
        self.keyed: Dict[Tuple[str, str], Job] = {}  # every job not finished that has a key, by name and key
        self.followers: Dict[str, Job] = {}  # jobs following the task that holds their key, by id
        self.waiting: List[Tuple[float, int, Job]] = []  # a heap of (due, seq, job) waiting to retry
        self.slots: List[Slot] = []  # filled by the manager
        self.dirty: Dict[str, Job] = {}  # jobs whose row the store must get
        # New jobs, in order of submit, whose first row the store must get (those whose ``first_row_owed``: one
        # written since with another row, a claim, stays here until reached); ``BACKLOG_ROWS`` a write.
        self.fresh: Deque[Job] = collections.deque()
        self.backlogged = False  # the last write left rows of ``fresh`` for the next: it is due at once
        self._latest = -math.inf  # the latest ``submitted_at`` in ``fresh`` (see ``_backlog_since``)
        self._early: List[Job] = []  # jobs of ``fresh`` submitted before one queued ahead of them
        self.abort_rows: List[Row] = []  # abort requests to record with the next write
        self.unsettled: Dict[str, Job] = {}  # jobs a user thread ended, until it completed their futures
        self.unwritten: List[Job] = []  # jobs a user thread ended whose write failed: the manager's to complete
        self.claim_ahead = 0  # queued jobs to claim beyond the workers' free places (see take_rows)
        self.ahead = 1  # jobs to hold ahead of the one each worker runs (``timed``)
        self.starting: Dict[str, Job] = {}  # jobs a user thread is claiming to start at once (``_start_at_once``)
        self._mean: Optional[float] = None  # seconds a job takes in a worker, a moving mean
        self._call_bytes = 0.0  # bytes of a call sent to a worker, a moving mean that rises at once (``_room``)
        self._seq = itertools.count(1)
        self.shutting_down = self.terminating = False
        self.broken: Optional[BaseException] = None
        self._wake = _WakePipe()
        self.wake_r = self._wake.r  # what the manager waits on
        weakref.finalize(self, self._wake.close)  # if no manager ever ran to close it
        self.wake_pending = False
        self.abandoned = False  # its Executor was collected without shutdown()
        self.manager_ident: Optional[int] = None  # the manager thread's, once it runs
        # Waiters wait on this, not on Thread.join(): up to Python 3.11, a join() interrupted by
        # Ctrl-C marks the thread stopped while it runs, and every later join() returns at once.
        self.stopped = threading.Event()

    # -- user threads ------------------------------------------------------------------

    def next_seq(self) -> int:
        return next(self._seq)

    def enqueue(self, job: Job) -> None:
        """Queue ``job``; or, if it follows a task that holds its key elsewhere, only record it.

        A job that finds a worker idle and none queued before it starts at
        once, from this thread (``_start_at_once``).
        """
        with self.lock:
            self.check_open()
            if job.id in self.jobs:
                raise ValueError(f"task_id {job.id!r} is taken by an unfinished task of this executor; ids are unique")
            self.jobs[job.id] = job
            idle = self._idle_slot() if job.follows is None and job.key is None else None
            if idle is not None:
                idle.reserved = True  # no other job is sent to it until this one is
                self.starting[job.id] = job
            else:
                if job.follows is None:
                    self.queue.append(job)
                else:
                    self.followers[job.id] = job
                if job.key is not None:
                    self.keyed[job.name, job.key] = job
                if job.submitted_at < self._latest:  # another thread's job, made first; or the clock went back
                    self._early.append(job)
                else:
                    self._latest = job.submitted_at
                job.first_row_owed = True
                self.fresh.append(job)
            wake, self.wake_pending = not self.wake_pending, True
        if idle is not None:
            self._start_at_once(job, idle)
        # The manager hears the reply on the worker's pipe, which it always watches; it must wake now only
        # to time a limit the job has.
        if wake or (idle is not None and (job.soft_time_limit is not None or job.time_limit is not None)):
            self.wake()

    def _idle_slot(self) -> Optional[Slot]:
        """A started worker with no job, if no job is queued: the next job may go to it at once.

        Once per ``DIRECT_EVERY`` s per worker: a direct start writes its
        claim from the user thread, one transaction for one job, which a
        steady flow of short jobs would pay for each; the manager's writes
        (in the recorder) carry many claims at once. The first jobs of a
        batch, and a job after a pause, still start at once.
        """
        if self._queue_head() is not None or self.terminating or self.broken is not None:
            return None
        budget = self.max_tasks_per_child
        now = time.monotonic()
        for slot in self.slots:
            if (
                slot.job is None
                and slot.ready
                and not slot.reserved
                and not slot.gone
                and now - slot.direct_at >= DIRECT_EVERY
                and (budget is None or slot.calls < budget)
            ):
                slot.direct_at = now
                return slot
        return None

    def _start_at_once(self, job: Job, slot: Slot) -> None:
        """Claim ``job`` in the store from this thread, and send it to the idle worker in ``slot`` (reserved).

        The first jobs of a batch start within a millisecond or two of their
        ``submit()``: no thread of the executor has to take the GIL from a
        busy caller, up to 5 ms each time, to write the claim, read its
        answer and send the job. The claim is the manager's for a new job (a
        RECEIVED row, then a read of the aborts asked for it, in one
        transaction). A claim the store refuses (an abort was asked for the
        id before, or another executor holds it), or a store that fails, or
        an abort of the job meanwhile, leaves the job to the manager, as if
        queued (first), which finds the same.
        """
        call = None
        with deferred():  # a Ctrl-C here would leave the slot reserved for ever
            try:
                row = self.row(job)
                row["state"] = RECEIVED
                try:
                    aborted, held = self.store.sync(self.executor_id, [row], [], claims=[(job.id, job.name, None)])
                except Exception:  # the manager's write meets it too, and says so
                    aborted, held = [job.id], {}
                with self.lock:
                    if job.stage != QUEUED:  # aborted or cancelled meanwhile: ended, and its row written
                        pass
                    elif aborted or held or self.shutting_down or self.broken is not None or slot.gone:
                        self.queue.appendleft(job)  # the manager's claim finds what this one found
                        self.dirty[job.id] = job
                    else:
                        job.claimed, job.args_repr = True, None  # stored with its row
                        job.move(RECEIVED)
                        call = self._send(job, slot)
                if call is not None:
                    with contextlib.suppress(OSError):  # the worker died: the manager finds it and fails the job
                        slot.send(encode(Calls.batch([call])))
            finally:
                with self.lock:
                    slot.reserved = False
                    del self.starting[job.id]

    def keyed_future(self, name: str, key: str) -> Optional[AbortableFuture]:
        """The future of this executor's unfinished job of task ``name`` under ``key``, if there is one."""
        with self.lock:
            job = self.keyed.get((name, key))
            return None if job is None else job.future

    def check_open(self) -> None:
        """Raise what ``submit`` raises once the executor stopped: broken, or shut down."""
        if self.broken is not None:
            raise concurrent.futures.process.BrokenProcessPool(f"the executor stopped: {self.broken}")
        if self.shutting_down:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def fail_now(self, job: Job) -> None:
        """Store and resolve a job that ended before it was queued."""
        with self.lock:
            self._owe([job])
        self._settle([job])

    def abort_all(self, by: str = "Executor.abort_all()") -> Tuple[int, int]:
        """Abort every unfinished job; return how many were asked, and how many of those still run."""
        by = asker(by)
        with deferred(), self.lock:
            asked = [job for job in self.jobs.values() if not job.abort_requested]
            # What the workers run, last: its abort frees a worker, which would go on to a job it holds ahead
            # before that one's recall, and start it.
            asked.sort(key=lambda job: job.stage == RUNNING)
            ended = [job for job in asked if self._mark_aborted(job)]
            self._owe(ended)
            graced = [job.terminate_by(job.grace) for job in asked if job.grace is not None and job.stage != DONE]
            aborts = [self.row(job, abort=by) for job in asked]
            running = sum(1 for job in self.jobs.values() if job.stage in (SENT, RUNNING))
        if any(graced):
            self.wake()  # the manager kills their workers when the time comes
        self._settle(ended, aborts)
        return len(asked), running

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Take no more jobs; with ``cancel_futures``, cancel those no worker holds or is free to take.

        As in ``ProcessPoolExecutor``: a running future completes (here, a
        job a worker holds, sent ahead or not), and so do the queued jobs
        that free workers are ready to take now, as the jobs in its call
        queue do; every other queued job is cancelled (ABORTED).
        """
        cancelled: List[Job] = []
        with deferred(), self.lock:  # one hold: the manager cannot send a job on between our look and our cancel
            self.shutting_down = True
            if cancel_futures:
                free = sum(self._room(slot) for slot in self.slots)
                for job in self.queue:
                    if job.stage != QUEUED or job.future.running():  # ended already, or sent once
                        continue
                    if free > 0:
                        free -= 1
                        continue
                    self._end_unrun(job, "cancelled")
                    cancelled.append(job)
                for job in [*self.followers.values(), *self._waiting_jobs()]:
                    self._end_unrun(job, "cancelled")
                    cancelled.append(job)
            self._owe(cancelled)
        self._settle(cancelled, cancel=True)
        self.wake()
        if wait and threading.get_ident() != self.manager_ident:  # a done-callback cannot wait for its own thread
            self.stopped.wait()

    def _abort(self, future: AbortableFuture, terminate_after: Optional[float] = None) -> bool:  # Controller
        with deferred(), self.lock:
            job = self.jobs.get(future.id)
            if job is None:
                return False
            if terminate_after is None:
                terminate_after = job.grace
            sooner = terminate_after is not None and job.terminate_by(terminate_after)
            if job.abort_requested and not sooner:
                return True
            ended = [job] if not job.abort_requested and self._mark_aborted(job) else []
            self._owe(ended)
            aborts = [self.row(job, abort=asker("AbortableFuture.abort()"))]
        if sooner and not ended:
            self.wake()  # the manager kills the worker when the time comes
        self._settle(ended, aborts)
        return True

    def _cancel(self, future: AbortableFuture) -> bool:  # Controller
        with deferred(), self.lock:
            job = self.jobs.get(future.id)
            if job is None or job.stage != QUEUED or future.running():  # running: sent to a worker once
                return future.cancelled()
            self._end_unrun(job, "cancelled")
            self._owe([job])
        self._settle([job], cancel=True)
        return True

    def terminate(self) -> List[Slot]:
        """Stop for good: queued jobs end ABORTED and no job starts from now on; return the slots to kill.

        Jobs the workers hold end ABORTED when their workers are found dead.
        """
        with deferred(), self.lock:
            self.terminating = self.shutting_down = True
            ended = [job for job in self.jobs.values() if job.stage in (QUEUED, WAITING)]
            for job in ended:
                self._end_unrun(job, "terminated")
            self._owe(ended)
            slots = list(self.slots)
        self._settle(ended)
        return slots

    def wake(self) -> None:
        self._wake.wake()

    def close_wake(self) -> None:
        """The manager has stopped: its wake-up pipe is closed now, not when the executor is collected."""
        self._wake.close()

    def _settle(self, ended: List[Job], aborts: Optional[List[Row]] = None, cancel: bool = False) -> None:
        """Store the rows of jobs a user thread ended (and ``aborts``), then complete their futures.

        A Ctrl-C waits for the write (inside it, it could leave a lock of
        SQLAlchemy's pool, or SQLite's write lock, held for good, and the
        manager waiting on it), but it can land before. Nothing is lost if
        it does: a write that fails (it raises here) leaves its rows to the
        manager's next write, which then completes their futures
        (``unwritten``); one that never began (the jobs are still
        ``unsettled``) is made, and its futures completed, as the manager
        closes (``leftovers``).
        """
        try:
            with deferred():  # a Ctrl-C inside the database driver or its pool would leak their locks
                self.store.write([self.row(job) for job in ended], aborts=aborts or ())
            with self.lock:
                for job in ended:  # written: the backlog need not write a new one's row again
                    job.first_row_owed = False
        except BaseException:
            with self.lock:
                self.dirty.update((job.id, job) for job in ended)
                self.abort_rows += aborts or []
                self.unwritten += [job for job in ended if self.unsettled.pop(job.id, None) is not None]
            self.wake()
            raise
        for job in ended:
            with self.lock:  # this thread's to settle, unless the manager took it as a leftover as it closed
                mine = self.unsettled.pop(job.id, None) is not None
            if mine and cancel:
                _notify_cancelled(job.future)
            elif mine:
                resolve([job])

    def take_unwritten(self) -> List[Job]:
        """The jobs a user thread ended whose write failed: rows in the next write, futures completed by it."""
        with self.lock:
            jobs, self.unwritten = self.unwritten, []
        return jobs

    def leftovers(self) -> List[Job]:
        """The jobs a user thread ended but, interrupted, never settled; their rows go with the next write."""
        with self.lock:
            jobs, self.unsettled = list(self.unsettled.values()), {}
            self.dirty.update((job.id, job) for job in jobs)
        return jobs

    # -- the manager thread -----------------------------------------------------------

    def abandon(self) -> None:
        """The executor was collected without ``shutdown()``: finish the work, then stop.

        Called by the garbage collector, in any thread, perhaps one that holds
        ``lock``: so it takes no lock, and the manager shuts down when woken.
        """
        self.abandoned = True
        self.wake()

    def woken(self) -> None:
        """The manager drained the wake pipe: the next submit must write a byte again."""
        with self.lock:
            self.wake_pending = False
            if self.abandoned:
                self.shutting_down = True

    def dispatch(self) -> List[Tuple[Slot, Call]]:
        """Give claimed queued jobs to idle workers, then to busy ones as their next; return the calls."""
        calls: List[Tuple[Slot, Call]] = []
        with self.lock:
            if self.terminating:
                return []
            slots = [s for s in self.slots if s.job is None] + [s for s in self.slots if s.job is not None]
            rooms = [self._room(slot) for slot in slots]
            since = self._stuck_since()
            stuck = [_stuck(slot, since) for slot in slots]
            if not all(stuck):  # what a worker on a long job would hold ahead is better run by the others
                rooms = [0 if late else room for room, late in zip(rooms, stuck)]
            # Bytes of calls each busy worker holds unread, kept under ``AHEAD_BYTES`` call by call: the mean
            # ``_room`` went by lags a burst of larger calls after small ones.
            held = [sum(len(job.blob or b"") for job in slot.ahead) for slot in slots]
            while any(rooms):  # one job to each worker with room in turn, the idle ones first
                for at, slot in enumerate(slots):
                    if rooms[at] <= 0:
                        continue
                    head = self._queue_head()
                    if head is None or not head.claimed:  # not claimed: wait for the next write
                        return calls
                    assert head.blob is not None
                    if slot.job is not None:  # ahead: within ``AHEAD_BYTES`` (a larger call only ever to an idle one)
                        if held[at] + len(head.blob) > AHEAD_BYTES:
                            rooms[at] = 0
                            continue
                        held[at] += len(head.blob)
                    calls.append((slot, self._send(self.queue.popleft(), slot)))
                    rooms[at] -= 1
        return calls

    def unstick(self) -> None:
        """Take back the jobs sent ahead to stuck workers, unread, and queue them first again, in order.

        A long job in a stream of short ones would hold the short ones sent
        ahead to its worker until it ends, while the other workers run out
        of work (head-of-line blocking). A job its worker accepted meanwhile
        (it has just reached it) stays, and so do those before it.
        """
        with self.lock:
            if self.terminating or not any(slot.ahead for slot in self.slots):  # each step: the usual case first
                return
            stuck = self._stuck_since()
            if all(_stuck(slot, stuck) for slot in self.slots):
                return  # no worker could run them sooner
            for slot in self.slots:
                if not slot.ahead or not _stuck(slot, stuck):
                    continue
                taken: List[Job] = []
                while slot.ahead:
                    later = slot.ahead[-1]
                    if later.stage != DONE and not later.words.take_back(later.word, later.seq):  # type: ignore[union-attr]
                        break  # accepted: its worker has reached it
                    slot.ahead.pop()
                    slot.taken_back.add(later.seq)  # its call is still on the pipe: its worker answers it unrun
                    if later.stage != DONE:
                        later.stage, later.words = QUEUED, None
                        taken.append(later)
                for later in taken:  # from the last: the first ends up first
                    self.queue.appendleft(later)

    def _stuck_since(self) -> float:
        """The wall-clock time before which a job still running makes its worker stuck."""
        return time.time() - max(STUCK_AFTER, STUCK_FACTOR * (self._mean or 0.0))

    def timed(self, elapsed: float) -> None:
        """A worker ran a job in ``elapsed`` s: how many jobs each worker holds ahead follows (``ahead``).

        About ``AHEAD_SECONDS`` of work, from 1 (as ``ProcessPoolExecutor``
        holds one call more than it has workers) to ``DEPTH - 1``: short jobs
        go many to a message and a worker never waits for the parent, and a
        long one is never stuck behind others on a busy worker while
        another is idle. A long job counts at once, a short one gradually.
        """
        mean = elapsed if self._mean is None else max(elapsed, 0.8 * self._mean + 0.2 * elapsed)
        self._mean = mean
        self.ahead = max(1, min(DEPTH - 1, int(AHEAD_SECONDS / max(mean, 1e-6))))

    def _send(self, job: Job, slot: Slot) -> Call:
        """Give ``job`` to the worker in ``slot``: to run now if it is idle, else after what it holds; its call."""
        job.words, job.word = slot.words, slot.words.take()
        if job.words.is_set(job.word, job.seq):  # the word it had here before it was taken back: not an abort
            job.words.abort(job.word, 0)
        slot.calls += 1
        if slot.job is None:
            slot.job = job
            self._start(job, slot)
        else:
            slot.ahead.append(job)
            job.stage = SENT
        # Under the lock, as its stage is: an abort or a shutdown may take the job back the moment
        # the lock is free. ``ahead``: not reported STARTED, so the worker must accept it first.
        if not job.future.running():  # a job sent again after its worker died is running already
            job.future.set_running_or_notify_cancel()
        assert job.blob is not None
        self._call_bytes = max(len(job.blob), 0.9 * self._call_bytes + 0.1 * len(job.blob))
        return Call(
            seq=job.seq, word=job.word, ahead=job.stage == SENT, task_id=job.id, name=job.name,
            blob=job.blob, chunked=job.chunked, retries=job.retries, options=job.options, log_limit=job.log_limit,
            memory=job.memory,
        )  # fmt: skip

    def promote(self, slot: Slot, retiring: bool = False) -> None:
        """The worker in ``slot`` answered its job and went straight on to the one sent ahead.

        ``retiring``: it exits instead (``max_memory_per_child``): it is sent
        nothing more, and what it holds ahead is queued again once it is gone.
        """
        with self.lock:
            if retiring:
                slot.job, slot.gone = None, True
                return
            slot.job = slot.ahead.popleft() if slot.ahead else None
            if slot.job is not None and slot.job.stage != DONE:
                self._start(slot.job, slot)

    def report(self, job: Job, progress: Progress) -> None:
        job.progress = job.future._task_progress = progress
        with self.lock:
            self.dirty[job.id] = job

    def logged(self, job: Job, log: Tuple[str, int]) -> None:
        """``job``'s worker sent its log so far: it goes with the next write."""
        with self.lock:
            job.log = job.future._task_log = log
            self.dirty[job.id] = job

    def finish(
        self, job: Job, state: str, blob: bytes, tb: Optional[str], progress: Optional[Progress], error: Optional[str],
        usage: Optional[Usage] = None, log: Optional[Tuple[str, int]] = None,
    ) -> None:  # fmt: skip
        """``job`` ended in ``state`` (``error``: its exception in words); its row goes with the next write.

        ``usage`` and ``log``: what it used, and its log, as its worker said.
        """
        with self.lock:
            job.end(state)
            job.result, job.traceback, job.error, job.blob = blob, tb, error, None
            if usage is not None:  # else what was known: its worker, if it started
                job.usage = usage
            if log is not None:
                job.log = job.future._task_log = log
            if progress is not None:
                job.progress = progress
            self._forget(job)
            self.dirty[job.id] = job

    def retire(self, slot: Slot) -> None:
        """The worker in ``slot`` is gone: no user thread sends it a job from now on (``_start_at_once``)."""
        with self.lock:
            slot.gone = True

    def vacate(self, slot: Slot) -> Tuple[Optional[Job], List[Job]]:
        """The worker in ``slot`` is gone: empty the slot; return its running job, and the jobs ended here.

        The jobs sent ahead, never reached, are queued first again, in
        order, to run on other workers; or, if aborted (or the pool
        terminates), they end ABORTED unrun. The running job is returned for
        the manager to fail, unless it had ended already (taken back unrun).
        """
        ended: List[Job] = []
        with self.lock:
            job, ahead, slot.job, slot.ahead = slot.job, slot.ahead, None, collections.deque()
            for later in reversed(ahead):
                if later.stage == DONE:
                    continue
                if self.terminating or later.abort_requested:
                    self._end_unrun(later, "terminated" if self.terminating else "aborted")
                    self.dirty[later.id] = later
                    ended.append(later)
                else:
                    later.stage, later.words = QUEUED, None
                    self.queue.appendleft(later)
            ended.reverse()
        return (None if job is None or job.stage == DONE else job), ended

    def aborted_elsewhere(self, found: Dict[str, Optional[float]]) -> List[Job]:
        """Honour aborts other processes recorded in the store; return the jobs that ended unrun.

        ``found`` maps each task's id to when its worker is to be killed
        (``terminate_at``, wall clock), or ``None``.
        """
        ended: List[Job] = []
        with self.lock:
            for task_id, terminate_at in found.items():
                job = self.jobs.get(task_id)
                if job is None:
                    continue
                if terminate_at is not None:
                    job.terminate_by(terminate_at - time.time(), asked=False)
                if not job.abort_requested and self._mark_aborted(job):
                    self.dirty[job.id] = job
                    ended.append(job)
        return ended

    def refused(self, holders: Dict[str, str]) -> List[Job]:
        """The store refused these jobs' claims (``Store.sync``); return the jobs that end.

        A job whose key another task holds follows that task. A job whose id
        another executor's row holds (submitted there at the same moment)
        was never this executor's task: it ends with ``ValueError``, and
        writes no row, as the one it would write is the other's.
        """
        ended: List[Job] = []
        with self.lock:
            for task_id, holder in holders.items():
                job = self.jobs.get(task_id)
                if job is None or job.stage != QUEUED:
                    continue
                self.queue.remove(job)
                if holder == task_id:
                    job.end(FAILURE, ValueError(
                        f"task_id {task_id!r} is taken: another executor's task of that id was stored first"
                    ))  # fmt: skip
                    self.dirty.pop(task_id, None)
                    self._forget(job)
                    ended.append(job)
                    continue
                job.move(PENDING)
                job.follows = holder
                self.followers[job.id] = job
        return ended

    def holders(self) -> List[str]:
        """The ids of the tasks that jobs follow."""
        with self.lock:
            return [job.follows for job in self.followers.values() if job.follows]

    def follow(self, found: Dict[str, Any]) -> List[Job]:
        """Jobs whose holder ``found`` (``TaskRecord`` by id) shows finished end as it did; return them.

        A job whose holder is gone from the store (forgotten) is queued again, to run itself.
        """
        ended: List[Job] = []
        with self.lock:
            for job in list(self.followers.values()):
                holder = found.get(job.follows or "")
                if holder is None:
                    job.follows = None
                    del self.followers[job.id]
                    self.queue.appendleft(job)
                elif holder.state in READY_STATES:
                    job.end(holder.state)
                    job.result, job.traceback, job.error, job.blob = holder.result, holder.traceback, holder.error, None
                    self._forget(job)
                    self.dirty[job.id] = job
                    ended.append(job)
        return ended

    def soft_limit(self, job: Job, memory: Optional[str] = None) -> None:
        """``job`` passed its soft time limit (or, as ``memory`` says, its soft memory limit): abort it."""
        with self.lock:
            if not job.abort_requested:
                job.soft_limited, job.soft_memory = True, memory
                self._mark_aborted(job)
                why = memory or f"its soft_time_limit of {job.soft_time_limit}s"
                self.abort_rows.append(self.row(job, abort=why))

    def retry(
        self, job: Job, blob: bytes, tb: Optional[str], error: Optional[str], countdown: Optional[float]
    ) -> List[Job]:
        """``job``'s attempt asked for another: it waits ``countdown`` s (RETRY); return it if it ended instead.

        An abort asked before now ends it ABORTED: an aborted task is never retried.
        """
        with self.lock:
            self.dirty[job.id] = job
            if job.abort_requested:
                exc = TaskAborted(f"task {job.id} aborted; its attempt ended asking for a retry ({error})",
                                  task_id=job.id)  # fmt: skip
                job.end(ABORTED, exc)
                job.blob = None
                self._forget(job)
                return [job]
            job.result, job.traceback, job.error = blob, tb, error  # the last attempt's, shown while it waits
            job.wait_to_retry(countdown or 0.0)
            heapq.heappush(self.waiting, (job.due, job.seq, job))
        return []

    def due(self, now: float) -> bool:
        """Queue first again the jobs whose retry is due by ``now``, in order; whether there were any."""
        if not self.waiting or self.waiting[0][0] > now:  # a hint, read without the lock
            return False
        with self.lock:
            ready: List[Job] = []
            while self.waiting and self.waiting[0][0] <= now:
                job = heapq.heappop(self.waiting)[2]
                if job.stage == WAITING:  # not ended while it waited
                    job.stage = QUEUED
                    ready.append(job)
            self.queue.extendleft(reversed(ready))
        return bool(ready)

    def next_due(self) -> float:
        """When the first retry is due (monotonic), or infinity."""
        waiting = self.waiting
        return waiting[0][0] if waiting else float("inf")

    def _waiting_jobs(self) -> List[Job]:
        return [job for _, _, job in self.waiting if job.stage == WAITING]

    def unclaimed_job_waits(self) -> bool:
        """Whether an idle worker waits for a job whose claim is not in the store yet."""
        with self.lock:
            head = self._queue_head()
            return head is not None and not head.claimed and any(s.job is None for s in self.slots)

    def take_rows(self, first: bool = False) -> Tuple[List[Row], List[Row], List[Job], float]:
        """The rows and abort rows owed to the store, the jobs they claim, and when; all but the backlog's are cleared.

        The queued jobs to claim are the first ones, as many as the workers
        have free places for, plus ``claim_ahead`` (so the workers need not
        wait for the next write); each is now RECEIVED (or refused: see
        ``refused``). A job without a key claimed in the write that first
        stores it is written once, RECEIVED, not PENDING and then claimed;
        one whose PENDING row is stored already, as submitted, is claimed by
        its id alone (``_sql.sync``'s UPDATE of its state), not written again.
        Of the new jobs not claimed, the first ``BACKLOG_ROWS`` are written
        PENDING (all of them once none is queued): a write stays short, so
        the claims the workers wait for are never held up by a backlog of
        thousands of rows, and the rest wait for the next writes, in order.
        With ``first`` (an idle worker waits for a claim), none are: the
        claims come before the backlog. Every job submitted before the time
        returned is among these rows or was written before.
        """
        with self.lock:
            claims: List[Job] = []
            wanted = sum(self._room(s) for s in self.slots) + self.claim_ahead
            for job in self.queue if not self.terminating else ():
                if wanted <= 0:
                    break
                if job.stage != QUEUED:  # ended while queued
                    continue
                wanted -= 1
                if not job.claimed and not job.abort_requested:
                    claims.append(job)
            for job in claims:  # a new row without a key is written RECEIVED: it is the claim
                if job.key is None:
                    job.move(RECEIVED)
                if job.first_row_owed or job.retries:
                    self.dirty[job.id] = job
                # else its row is stored as submitted (PENDING): the claim alone moves it, one id in an UPDATE
            for job in self.dirty.values():
                job.first_row_owed = False
            backlog = 0 if first else BACKLOG_ROWS if self._queue_head() is not None else len(self.fresh)
            while self.fresh and backlog > 0:
                job = self.fresh.popleft()
                if job.first_row_owed:
                    job.first_row_owed = False
                    self.dirty[job.id] = job
                    backlog -= 1
            self.backlogged = not first and backlog == 0 and bool(self.fresh)
            # A row a user thread is writing may land after this write: this one must not vouch for it.
            now = min([time.time(), self._backlog_since(), *(job.submitted_at for job in self.starting.values())])
            rows = [self.row(job) for job in self.dirty.values()]
            for job in claims:  # a keyed one's row stays PENDING: the store's claim asks for its key first
                job.move(RECEIVED)
            aborts, self.dirty, self.abort_rows = self.abort_rows, {}, []
        return rows, aborts, claims, now

    def _backlog_since(self) -> float:
        """When the earliest new job not written yet was submitted (``inf``: none), to vouch for those before it.

        In ``fresh`` the times rise, but for the jobs ``_early`` keeps (two
        threads' jobs that crossed on their way in, or a clock that went
        back): the earliest is the first in ``fresh`` or one of those.
        """
        while self.fresh and not self.fresh[0].first_row_owed:
            self.fresh.popleft()
        if not self.fresh:
            self._latest, self._early = -math.inf, []
            return math.inf
        self._early = [job for job in self._early if job.first_row_owed]
        return min([self.fresh[0].submitted_at, *(job.submitted_at for job in self._early)])

    def stored(self, rows: List[Row]) -> None:
        """The store holds ``rows``: their jobs' argument text need not be held or sent again.

        Later rows give none, and the store keeps what it has (its upsert's
        ``COALESCE``). Only once stored: a row written before it, from a
        user thread, or by a failed write's recovery still carries the text.
        """
        with self.lock:
            for row in rows:
                job = self.jobs.get(row["id"])
                if job is not None and row["args_repr"] is not None:
                    job.args_repr = None

    def claimed(self, jobs: List[Job]) -> None:
        """The store holds the claims of ``jobs``: they may be sent (unless an abort ends them first)."""
        with self.lock:
            for job in jobs:
                job.claimed = True

    def keeps_workers(self) -> bool:
        """Whether a worker that died is to be replaced."""
        with self.lock:
            return not self.terminating and not (self.shutting_down and not self.queue)

    def finished(self) -> bool:
        """Whether the manager may stop: shut down, and no job left anywhere."""
        with self.lock:
            return self.shutting_down and not self.jobs and all(s.job is None for s in self.slots)

    def break_all(self, exc: BaseException, unresolved: List[Job]) -> Tuple[List[Job], List[Job]]:
        """The manager cannot go on: fail every job not finished.

        Returns the jobs whose futures the manager now completes (once their
        rows are written, if they can be), and those of them that had ended
        before. A job a user thread ended is that thread's to complete
        (``_settle``) unless taken from ``unsettled`` first, as here, and as
        ``leftovers`` does: a row it still owes in ``dirty`` does not make it
        the manager's, and every future completes once.
        """
        error = concurrent.futures.process.BrokenProcessPool(f"the localabort executor stopped: {exc}")
        with self.lock:
            self.broken, self.shutting_down = exc, True
            owned = [*unresolved, *self.unsettled.values(), *self.unwritten, *self.jobs.values()]
            owned += [job for job in self.dirty.values() if job.stage != DONE]
            self.unsettled.clear()
            self.unwritten.clear()
            jobs = {job.id: job for job in owned}
            ended = [job for job in jobs.values() if job.stage == DONE]
            self.jobs.clear()
            self.keyed.clear()
            self.followers.clear()
            self.queue.clear()
            self.dirty.clear()
            self.fresh.clear()
            for job in jobs.values():
                if job.stage != DONE:
                    job.end(FAILURE, error)
        return list(jobs.values()), ended

    # -- under the lock --------------------------------------------------------------

    def _mark_aborted(self, job: Job) -> bool:
        """Flag ``job`` aborted; end it if it has not started. Return whether it ended.

        A job sent ahead to a busy worker has not started unless that worker
        claimed it; recalled in time, it stays the slot's next job until the
        worker answers it unrun.
        """
        job.abort_requested = job.future._abort_requested = True
        if job.stage in (QUEUED, WAITING) or (job.stage == SENT and _recall(job)):
            self._end_unrun(job, "aborted")
            return True
        if job.stage == RUNNING and job.words is not None:  # it sees the word at its next check
            job.words.abort(job.word, job.seq)
        return False

    def _room(self, slot: Slot) -> int:
        """How many more jobs the worker in ``slot`` takes: to run now, and ahead (``ahead``); none if it will exit."""
        if slot.reserved or slot.gone:  # a user thread is sending it a job (``_start_at_once``); or it exits
            return 0
        ahead = self.ahead
        if ahead * self._call_bytes > AHEAD_BYTES:  # never more unread in its pipe than the pipe holds
            ahead = max(1, int(AHEAD_BYTES / self._call_bytes))  # and ``dispatch`` holds back a larger call
        room = (slot.job is None) + max(0, ahead - len(slot.ahead) - len(slot.taken_back))
        budget = self.max_tasks_per_child
        return room if budget is None else max(0, min(room, budget - slot.calls))

    def _queue_head(self) -> Optional[Job]:
        """The first job still queued, dropping those ended while queued (aborted, cancelled)."""
        while self.queue and self.queue[0].stage != QUEUED:
            self.queue.popleft()
        return self.queue[0] if self.queue else None

    def _end_unrun(self, job: Job, how: str) -> None:
        """End ``job``, which never started (or waits to retry), ABORTED. The caller has its row written."""
        job.end(ABORTED, unrun(job.id, how, waiting=job.retries > 0))
        self._forget(job)

    def _owe(self, jobs: List[Job]) -> None:
        """A user thread ended ``jobs``: it settles them (``_settle``), unless it is interrupted first."""
        for job in jobs:
            self.unsettled[job.id] = job

    def _forget(self, job: Job) -> None:
        """``job`` has ended: it is no longer this executor's to track."""
        self.jobs.pop(job.id, None)
        self.followers.pop(job.id, None)
        if job.key is not None and self.keyed.get((job.name, job.key)) is job:
            del self.keyed[job.name, job.key]

    def _start(self, job: Job, slot: Slot) -> None:
        """``job`` is now the current one of the worker in ``slot``."""
        job.stage = RUNNING
        if job.abort_requested:  # the worker skips it, or stops at its first check: no STARTED row
            return
        job.move(STARTED)
        job.started_at = time.time()
        job.usage = (slot.pid, None, None)  # its worker, known now (the dashboard's task stream); the rest at its end
        if slot.ready:  # else its clock starts when the worker says it has started
            job.start_clock()
        self.dirty[job.id] = job

    def row(self, job: Job, abort: Optional[str] = None) -> Row:
        """The store row of ``job``; ``abort``, who asks for its abort, adds the request.

        A state row carries the job's log, if its worker sent one since the last row (``Store.write``).
        """
        done, total = job.progress if job.progress is not None else (None, None)
        pid, cpu, peak = job.usage if job.usage is not None else (None, None, None)
        # Every column of ``task_row``, written out: a call with keywords took five times as long, per row.
        row: Row = {
            "id": job.id, "executor_id": self.executor_id, "name": job.name, "key": job.key, "state": job.state,
            "submitted_at": job.submitted_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "progress_done": done, "progress_total": total, "result": job.result, "traceback": job.traceback,
            "error": job.error, "retries": job.retries, "eta": job.eta if job.stage == WAITING else None,
            "args_repr": job.args_repr, "worker_pid": pid, "cpu_seconds": cpu, "peak_rss": peak,
        }  # fmt: skip
        if abort is not None:
            row.update(abort_requested_at=time.time(), abort_by=abort, terminate_at=job.terminate_at)
        elif job.log is not None:
            row["log"], job.log = job.log, None
        return row


def _stuck(slot: Slot, since: float) -> bool:
    """Whether the worker in ``slot`` runs a job started before ``since`` (``Scheduler._stuck_since``)."""
    job = slot.job
    return job is not None and job.started_at is not None and job.started_at <= since


def _recall(job: Job) -> bool:
    """Take back ``job``, sent ahead; whether its worker will never start it (``AbortWords.recall``)."""
    assert job.words is not None
    return job.words.recall(job.word, job.seq)


def _notify_cancelled(future: AbortableFuture) -> None:
    """Cancel the future of a job ended unrun (its row is stored), as ``Future.cancel`` does."""
    future._task_state = ABORTED
    concurrent.futures.Future.cancel(future)
    future.set_running_or_notify_cancel()


class _WakePipe:
    """The manager's wake-up pipe: any thread writes a byte to wake it; closed once, and written to only while open.

    A write after the close would land in whatever file has taken the
    descriptor's number since, so both go under one lock: reentrant, as
    the garbage collector may wake it (``abandon``) from inside a wake.
    """

    def __init__(self) -> None:
        self.r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._lock = threading.RLock()
        self._open = True

    def wake(self) -> None:
        with self._lock:
            if self._open:
                with contextlib.suppress(BlockingIOError):  # full: the manager has wake-ups enough to read
                    os.write(self._w, b"\0")

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                os.close(self.r)
                os.close(self._w)
