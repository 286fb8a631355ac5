"""The manager thread: it waits, reads the workers, keeps them alive, and writes the store.

Decisions about jobs are the scheduler's (``_scheduler``); this thread
does the waiting and the I/O around them. This is the one description of
its loop (``_executor`` gives the overview). Each ``_step``:

1. waits on the wake pipe, the recorder's pipe, every worker's process
   sentinel and the pipes of busy workers, or until the next abort poll,
   time limit or write is due (with no timeout only when no job is queued
   or running). When jobs are short (``Scheduler.ahead`` above 2), a
   worker that holds enough jobs ahead is not waited on: its replies are
   read together every ``TICK`` s, so the parent wakes once for many jobs
   and not once for each, and the worker never waits meanwhile;
2. reads replies, and replaces dead workers: a job a worker ran fails with
   ``WorkerLost`` (``TimeLimitExceeded`` when the manager killed it for its
   time limit, ABORTED when terminated), and the job sent ahead of it runs
   on the replacement;
3. while jobs run, reads the store for aborts other processes asked for,
   every ``poll_interval``, and looks for busy workers that died while a
   process their task started holds their sentinel open;
4. enforces time limits: the soft one asks for an abort, the hard one
   kills the worker;
5. if an idle worker waits for a job whose claim is not in the store yet,
   writes first (see 7): no task starts before the store holds its claim;
6. sends claimed jobs to idle workers, and to busy ones the jobs they run
   next, as many as the jobs are short (``Scheduler.timed``), each
   worker's in one message;
7. writes to the store in one transaction (``Store.sync``, a group
   commit): every changed row, among them the *claims* of the next queued
   jobs (as many as the workers will take before the next write; their
   rows say RECEIVED), then reads which of those have an abort requested;
   it writes at most ``FLUSH_INTERVAL`` after the first change while
   workers are busy, at once when none is, and at least every
   ``HEARTBEAT`` s (a written-up time that tells other processes which
   ids it may still hold unwritten). The write runs in the recorder, a
   process of its own (``_recorder``, which says why), one at a time,
   while this thread goes on with 1 to 6, so a worker never waits the
   length of a write for its next job. When it is done (its answer on the
   recorder's pipe wakes step 1), this thread completes the futures of the jobs whose final state it stored (a final
   state is stored before anyone sees it), ends unrun the claims an abort
   came before, and sends what that write let start.

So an abort from another process is never lost: recorded before a job's
claim, the job ends unrun; after it, the job is RECEIVED or STARTED, and
the poll (3) finds the abort: a job no worker has started ends unrun, a
running one is asked.

User threads wait for this thread only to shut down. They reach a worker
through its abort words (``_words``), and kill workers through
``terminate``.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ._capture import Relay
from ._errors import MemoryLimitExceeded, TaskAborted, TimeLimitExceeded, WorkerLost
from ._interrupt import start_thread
from ._jobs import DONE, Job, resolve
from ._memory import passed
from ._messages import Call, Calls, InitFailed, Log, Message, Over, Ready, Reply, Report, decode, encode
from ._outcome import RunOutcome, by_soft_limit, describe, dump, load_outcome, terminated, within_limit
from ._procs import HEARTBEAT
from ._recorder import Recorder, Write
from ._scheduler import Scheduler
from ._slot import STOP_GRACE, Slot
from ._states import ABORTED, FAILURE, RETRY
from ._words import allocate
from ._worker import MAIN_UNGUARDED, WorkerSetup

if TYPE_CHECKING:
    from ._slot import Context

__all__ = ["Manager"]
#: Seconds a changed row may wait for the next store write while workers are busy.
FLUSH_INTERVAL = 0.002
#: Seconds between two reads of the replies of workers that hold enough jobs ahead not to wait (see ``_step``).
TICK = 0.001
#: Workers in a row that may die before they start before the executor gives up.
MAX_START_FAILURES = 3
#: Seconds between a broken executor's tries to write the rows the store refused.
RETRY_OWED = 1.0


class Manager:
    """The thread that drives the workers of one executor, deciding through its ``Scheduler``."""

    def __init__(
        self, scheduler: Scheduler, workers: Workers, poll_interval: float, tmpdir: Optional[str]
    ) -> None:  # fmt: skip
        self.scheduler = scheduler
        self.ctx, self._array, self._worker = workers.ctx, workers.array, workers.setup
        scheduler.slots[:] = workers.slots
        self._store = scheduler.store
        self._poll_interval = poll_interval
        self._tmpdir = tmpdir
        self._writer = Recorder(self._store, scheduler.executor_id)  # the store's writes (``_recorder``)
        self._relay = Relay()  # the log records workers forward, to this process's handlers
        self._next_poll = 0.0
        self._poller = select.poll()  # what ``_wait`` waits on: the descriptors of ``_polled``
        self._polled: Dict[int, Optional[Slot]] = {}
        self._start_failures = 0
        self._unresolved: List[Job] = []  # finished jobs waiting for the next store write
        self._owed: List[Any] = []  # a broken executor's rows the store refused: written once it takes them
        self._finished = 0  # jobs finished since the last write: how many to claim ahead
        self._flush_due = float("inf")
        self._next_heartbeat = 0.0
        self._on_stop: Callable[[Manager], None] = lambda manager: None
        self._thread = threading.Thread(target=self._manage, name="localabort-manager", daemon=True)

    def start(self, on_stop: Callable[[Manager], None]) -> None:
        """Start the writer and manager threads; ``on_stop(self)`` is called as the manager ends.

        If either thread cannot start (``RuntimeError`` at the interpreter's
        shutdown, or no thread left to the process), the executor is broken
        here, as a failure of the manager thread would break it: its workers
        are stopped, ``submit()`` raises ``BrokenProcessPool`` naming the
        cause, and nothing waits for a thread that never ran.
        """
        self._on_stop = on_stop
        try:
            start_thread(self._thread)
        except BaseException as exc:
            self._end(exc)

    def _manage(self) -> None:
        self.scheduler.manager_ident = threading.get_ident()
        try:
            while self._step():
                pass
        except BaseException as exc:  # a store or pool failure: fail what is left, loudly
            self._end(exc)
        else:
            self._end(None)

    def _end(self, exc: Optional[BaseException]) -> None:
        """The manager's last act, on its thread (or on the one that could not start it): ``exc`` broke it, or None."""
        try:
            if exc is not None:
                self._break(exc)
        finally:
            try:
                self._close()
            finally:
                self.scheduler.close_wake()
                self.scheduler.stopped.set()
                self._on_stop(self)

    def open_futures(self) -> List[Any]:
        """The futures not completed yet: the unfinished jobs', and those of jobs awaiting their write."""
        with self.scheduler.lock:
            jobs = [*self.scheduler.jobs.values(), *self._unresolved]
        return [job.future for job in jobs]

    def terminate(self, sig: int = signal.SIGKILL) -> int:
        """Kill every worker now with ``sig`` (from a user thread) and wait; their tasks end ABORTED.

        Returns how many running tasks it killed.
        """
        slots = self.scheduler.terminate()
        running = sum(slot.job is not None for slot in slots)
        for slot in slots:
            slot.kill(sig)
        self.scheduler.stopped.wait()
        return running

    def _step(self) -> bool:
        """One loop of the manager, its steps numbered as the module's docstring numbers them; ``False``: stop."""
        scheduler = self.scheduler
        busy = any(slot.job is not None for slot in scheduler.slots)
        finished: List[Job] = []
        # Whatever raises below (a failed write's answer, a store that cannot be read), the jobs ended so far
        # in this step are the break's to settle: they have left ``jobs``, and only ``_unresolved`` holds them.
        try:
            self._wait_and_read(busy, finished)  # 1, 2
            now = time.monotonic()
            scheduler.due(now)  # retries whose time came are queued first again
            self._poll_store(now, busy, finished)  # 3
            self._enforce_limits(now)  # 4
        finally:
            self._finished += len(finished)
            self._unresolved += finished
            finished.clear()  # hold no job past its resolve: a caller may drop its result and expect it freed
        self._feed()  # 5, 6
        self._group_commit(now)  # 7
        return not scheduler.finished()

    def _wait_and_read(self, busy: bool, finished: List[Job]) -> None:
        """Steps 1 and 2: wait for something to do, then read what came: replies, deaths, the recorder's answer."""
        scheduler = self.scheduler
        waitables: Dict[int, Optional[Slot]] = {scheduler.wake_r: None}  # by descriptor
        if self._writer.done_r is not None:  # the recorder's pipe, once it has started
            waitables[self._writer.done_r] = None
        fed: List[Slot] = []  # busy workers with enough jobs ahead: their replies are read on the next tick
        ticking = scheduler.ahead > 2  # short jobs: their replies are read in batches, not one wake-up each
        for slot in scheduler.slots:
            waitables[slot.sentinel] = slot
            # An idle worker's pipe too: a user thread may send it a job at any moment (``Scheduler.enqueue``).
            if slot.conn.closed:  # reaped (terminated): nothing more comes from it
                pass
            elif not slot.ready or slot.job is None or not ticking or 2 * len(slot.ahead) < scheduler.ahead:
                waitables[slot.conn.fileno()] = slot
            else:
                fed.append(slot)
        # Never wait past the heartbeat, so never without a timeout: a lost wake-up costs one poll, not a hang.
        watching = busy or bool(scheduler.followers or scheduler.waiting)  # the store may hold aborts for them
        timeout = self._timeout(watching)
        for fd, owner in self._wait(waitables, min(timeout, TICK) if fed else timeout):
            if fd == self._writer.done_r:  # the answer to the write under way; or the recorder is ready, or gone
                write = self._writer.take()
                if write is not None:
                    self._written(write)
            elif owner is None:
                # Drain first, then clear: a submit after the clear writes a new byte; one before it
                # is already queued, and this loop dispatches it. (The other order loses wake-ups.)
                os.read(scheduler.wake_r, 65536)
                scheduler.woken()
            elif scheduler.slots[owner.index] is owner:  # not replaced earlier in this loop
                if fd == owner.sentinel:
                    self._replace(owner, finished)
                else:
                    self._receive(owner, finished)
        for slot in fed:
            if scheduler.slots[slot.index] is slot:
                self._receive(slot, finished)

    def _poll_store(self, now: float, busy: bool, finished: List[Job]) -> None:
        """Step 3: every ``poll_interval`` while jobs run, the aborts other processes asked, and workers found dead."""
        scheduler = self.scheduler
        if not (busy or scheduler.followers or scheduler.waiting) or now < self._next_poll:
            return
        self._next_poll = now + self._poll_interval
        finished += scheduler.aborted_elsewhere(self._store.aborts_requested(scheduler.executor_id))
        if scheduler.followers:
            records = self._store.tasks(scheduler.holders())
            finished += scheduler.follow({record.id: record for record in records})
        for slot in scheduler.slots:  # a dead worker's sentinel may be held open by a process its task forked
            if slot.job is not None and slot.ended():
                self._replace(slot, finished)

    def _feed(self) -> None:
        """Steps 5 and 6: claim first what an idle worker waits for, then send every worker the jobs it may hold."""
        scheduler = self.scheduler
        if scheduler.unclaimed_job_waits():
            self._commit(first=True)  # a task never starts before the store holds its claim
        scheduler.unstick()  # jobs waiting behind a long one run on the other workers
        self._send(scheduler.dispatch())

    def _group_commit(self, now: float) -> None:
        """Step 7: write while workers run, at most ``FLUSH_INTERVAL`` after a change, at once when none is busy.

        No reply is coming to share the write with when no worker is busy;
        and at least every ``HEARTBEAT``, for the written-up time.
        """
        scheduler = self.scheduler
        if scheduler.dirty or scheduler.abort_rows:
            self._flush_due = min(self._flush_due, now + FLUSH_INTERVAL)
        elif scheduler.fresh:  # new rows; a backlog of them, ``BACKLOG_ROWS`` a write, back to back in the recorder
            at_once = scheduler.backlogged and self._writer.ready
            self._flush_due = min(self._flush_due, now if at_once else now + FLUSH_INTERVAL)
        if (
            now >= self._flush_due
            or now >= self._next_heartbeat
            or (self._flush_due < float("inf") and all(s.job is None for s in scheduler.slots))
        ):
            self._commit()  # the jobs it claims are sent once it is done

    def _wait(self, waitables: Dict[int, Optional[Slot]], timeout: float) -> List[Tuple[int, Optional[Slot]]]:
        """The descriptors of ``waitables`` ready within ``timeout`` seconds, each with its slot (``None``: the pipes).

        One ``poll`` object for the manager's life, its descriptors changed
        only when the set changes: ``multiprocessing.connection.wait`` makes
        and fills a selector on every call, a quarter of the loop's time.
        """
        for fd in self._polled.keys() - waitables.keys():
            self._poller.unregister(fd)
        for fd in waitables.keys() - self._polled.keys():
            self._poller.register(fd, select.POLLIN)
        self._polled = waitables
        events = self._poller.poll(math.ceil(timeout * 1000))  # in ms: never sooner than asked
        return [(fd, waitables[fd]) for fd, _ in events]

    def _timeout(self, busy: bool) -> float:
        soonest = min(
            (
                min(s.job.soft_deadline, s.job.hard_deadline, s.job.terminate_deadline)
                for s in self.scheduler.slots
                if s.job is not None and s.job.lost is None
            ),
            default=float("inf"),
        )
        poll = self._next_poll if busy else float("inf")
        due = self.scheduler.next_due()
        now = time.monotonic()
        # While a write is under way, the next one waits for it, and its end wakes this thread.
        flush = min(self._flush_due, self._next_heartbeat) if self._writer.pending is None else now + HEARTBEAT
        return max(0.0, min(poll, soonest, due, flush) - now)

    def _receive(self, slot: Slot, finished: List[Job]) -> None:
        """Read every message the worker in ``slot`` has sent; replace it if its pipe broke."""
        if not self._drain(slot, finished):
            self._replace(slot, finished)

    def _drain(self, slot: Slot, finished: List[Job]) -> bool:
        """Handle what the worker in ``slot`` has sent so far; ``False`` if its pipe broke."""
        try:
            messages, ended = slot.messages()
            for message in messages:
                self._handle(slot, decode(message), finished)
        except (EOFError, OSError):
            return False
        return not ended

    def _handle(self, slot: Slot, message: Message, finished: List[Job]) -> None:
        if isinstance(message, Ready):
            slot.ready = True
            self._start_failures = 0
            if slot.job is not None:  # sent before the worker had started: its clock starts now
                slot.job.start_clock()
            return
        if isinstance(message, InitFailed):  # every worker would fail the same way: stop, as ProcessPoolExecutor does
            # Once it has exited, as ProcessPoolExecutor breaks when its process ends: killed sooner, what it
            # logged of the error on its way out (through a QueueHandler, say) would be lost.
            slot.reap(timeout=STOP_GRACE)
            raise RuntimeError(f"the initializer {message.initializer} raised in a worker: {message.error}")
        job = slot.job
        if isinstance(message, (Log, Reply)) and message.records:  # whatever became of the job since
            self._relay.put(message.records)
        if isinstance(message, Reply) and message.seq in slot.taken_back:  # before a job of that seq sent again
            slot.taken_back.discard(message.seq)  # answered unrun (``Scheduler.unstick``): its word is free
            return
        if isinstance(message, Log):
            if job is not None and message.seq == job.seq and message.log is not None and job.stage != DONE:
                self.scheduler.logged(job, message.log)
            return
        if isinstance(message, Over):
            if job is not None and message.seq == job.seq and job.stage != DONE:
                self._over_memory(slot, job, message.used, message.hard)
            return
        if job is None or not isinstance(message, (Report, Reply)) or message.seq != job.seq:  # pragma: no cover
            return
        if job.stage == DONE:  # recalled before its worker reached it: ended already
            if isinstance(message, Reply):
                self.scheduler.promote(slot)
            return
        if isinstance(message, Report):
            self.scheduler.report(job, (message.done, message.total))
        elif message.state == RETRY:
            self.scheduler.promote(slot, message.retiring)
            if message.log is not None:  # the attempt's: the next one's replaces it
                self.scheduler.logged(job, message.log)
            ended = self.scheduler.retry(job, message.blob, message.traceback, message.error, message.countdown)
            finished += ended  # aborted before it could wait: it ends here
            if message.progress is not None:
                job.progress = message.progress
        else:
            self.scheduler.promote(slot, message.retiring)
            self.scheduler.timed(message.elapsed)
            what = f"{job.name} [{job.id}]"
            state, blob, tb = within_limit(message.state, message.blob, message.traceback, what)
            error = message.error if blob is message.blob else describe(load_outcome(state, blob, None)[1])
            if job.soft_limited and state == ABORTED:  # say why: a limit, not a user
                outcome = RunOutcome(state, None, load_outcome(state, blob, None)[1])
                exc = by_soft_limit(outcome, what, job.soft_time_limit, job.soft_memory).exception
                blob, error = dump(exc), describe(exc)
            self.scheduler.finish(job, state, blob, tb, message.progress, error, message.usage, message.log)
            finished.append(job)

    def _over_memory(self, slot: Slot, job: Job, used: int, hard: bool) -> None:
        """``job``'s worker says it passed a memory limit: kill the worker (``hard``), or ask the job to abort."""
        assert job.memory is not None
        soft_limit, hard_limit = job.memory
        if hard:
            if job.lost is None:
                job.lost = MemoryLimitExceeded(f"{job.name} [{job.id}] {passed(used, hard_limit, soft=False)}")
                slot.kill()
            return
        self.scheduler.soft_limit(job, memory=passed(used, soft_limit, soft=True))

    def _replace(self, slot: Slot, finished: List[Job]) -> None:
        """The worker in ``slot`` is gone: fail its job, requeue the one sent ahead, start a new worker."""
        scheduler = self.scheduler
        scheduler.retire(slot)  # before it is reaped: a user thread sends it no job meanwhile
        self._drain(slot, finished)  # what it sent before it died
        slot.reap(timeout=1.0)
        job, ended = scheduler.vacate(slot)
        finished += ended
        start_failure = None
        if not slot.ready and not scheduler.terminating:
            self._start_failures += 1
            unguarded = slot.exitcode == MAIN_UNGUARDED
            if unguarded:  # it will not go better with the next: stop now
                self._start_failures = MAX_START_FAILURES
            start_failure = (
                f"a worker (pid {slot.pid}) "
                + ("started an Executor of its own" if unguarded else f"{slot.exit_reason()} before it started")
                + "; under spawn and forkserver each worker imports the main module, so a script must keep its "
                "code under `if __name__ == '__main__':`"
            )
        if job is not None:
            if scheduler.terminating:
                exc: BaseException = job.lost or terminated(job.id)
            else:
                exc = job.lost or WorkerLost(
                    start_failure or f"the worker (pid {slot.pid}) running {job.name} [{job.id}] {slot.exit_reason()}"
                )
            state = ABORTED if isinstance(exc, TaskAborted) else FAILURE  # killed on purpose, or lost
            scheduler.finish(job, state, dump(exc), None, None, describe(exc))
            finished.append(job)
        if self._start_failures >= MAX_START_FAILURES:
            raise RuntimeError(start_failure)
        if scheduler.keeps_workers():
            scheduler.slots[slot.index] = self._start_slot(slot.index)

    def _start_slot(self, index: int) -> Slot:
        """A new worker process in slot ``index`` (its words in the shared array stay the slot's)."""
        return Slot(self.ctx, index, self._array, self._worker)

    def _enforce_limits(self, now: float) -> None:
        for slot in self.scheduler.slots:
            job = slot.job
            if job is None or job.stage == DONE:
                continue
            if now >= job.hard_deadline and job.lost is None:
                job.lost = TimeLimitExceeded(f"{job.name} [{job.id}] ran past its time_limit of {job.time_limit}s")
                slot.kill()
            elif now >= job.terminate_deadline and job.lost is None:
                job.lost = terminated(job.id, job.terminate_after)
                slot.kill()
            elif now >= job.soft_deadline:
                job.soft_deadline = float("inf")
                self.scheduler.soft_limit(job)

    @staticmethod
    def _send(calls: List[Tuple[Slot, Call]]) -> None:
        """Send each worker its calls, in order, in one message."""
        to: Dict[Slot, List[Call]] = {}
        for slot, call in calls:
            to.setdefault(slot, []).append(call)
        for slot, some in to.items():
            try:
                slot.send(encode(Calls.batch(some)))
            except OSError:  # the worker died; its sentinel says so next loop
                pass

    def _commit(self, wait: bool = False, first: bool = False) -> None:
        """Start the next write (step 7 of the loop) unless one is under way; with ``wait``, see it done.

        ``first``: an idle worker waits for a claim, so the claims go before
        the rows of the rest of the queue (``Scheduler.take_rows``).

        The recorder writes (``_recorder``); ``_written`` takes it from there.
        """
        scheduler = self.scheduler
        if wait:
            self._await_write()
        if self._writer.pending is None:
            scheduler.claim_ahead, self._finished = 2 * self._finished, 0
            rows, aborts, claims, flushed_at = scheduler.take_rows(first)
            unresolved, self._unresolved = [*self._unresolved, *scheduler.take_unwritten()], []
            made = self._writer.hand(Write(rows, aborts, claims, flushed_at, unresolved))
            self._flush_due = float("inf")
            self._next_heartbeat = time.monotonic() + HEARTBEAT
            if made:  # here, before the recorder was ready: done already
                self._await_write()
        if wait:
            self._await_write()

    def _written(self, write: Write) -> None:
        """A write is done: complete the futures of the jobs it stored, send what it claimed, end aborted claims."""
        if write.error is not None:
            self._unresolved[:0] = write.unresolved  # not stored: the break settles them
            raise write.error
        scheduler = self.scheduler
        aborted, held = write.answer
        scheduler.stored(write.rows)
        resolve(scheduler.refused(held))  # their ids are other executors' tasks: no row of theirs to wait for
        scheduler.claimed([job for job in write.claims if job.id not in held])
        resolve(write.unresolved)  # empties the list
        self._unresolved += scheduler.aborted_elsewhere(dict.fromkeys(aborted))  # their rows go with the next write
        self._send(scheduler.dispatch())  # jobs this write claimed may start now

    def _await_write(self) -> None:
        """Wait for the write under way, if there is one, and take it from there."""
        if self._writer.pending is not None:
            write = self._writer.take()
            assert write is not None  # one was handed over
            self._written(write)

    def _break(self, exc: BaseException) -> None:
        """The manager cannot go on: settle every future, then stop the workers.

        The others fail with ``BrokenProcessPool``, whose message says why.
        Every row is written if the store still takes writes; then jobs
        that finished keep their outcome. If it does not (a full disk), no
        future says what the store never kept: each fails with the store's
        error instead, and those rows are owed (``_close`` keeps trying).
        """
        try:
            self._await_write()  # its jobs are settled by it, or come back to ``_unresolved``
        except BaseException:  # the write that failed: most likely what broke the manager
            pass
        jobs, ended = self.scheduler.break_all(exc, self._unresolved)
        self._unresolved = []
        for slot in self.scheduler.slots:
            slot.kill()
        try:
            self._store.write([self.scheduler.row(job) for job in jobs])
        except Exception as error:  # the store may be what failed
            for job in ended:
                lost = BrokenProcessPool(
                    f"the localabort executor stopped: {exc}; {job.name} [{job.id}] ended {job.state}, "
                    f"but the store could not keep it ({error})"
                )
                job.state, job.result, job.error, job.traceback = FAILURE, dump(lost), describe(lost), None
            self._owed = [self.scheduler.row(job) for job in jobs]
        resolve([job for job in jobs if not job.future.done()])

    def _close(self) -> None:
        for slot in self.scheduler.slots:
            if slot.job is None:
                slot.ask_to_stop()
            else:
                slot.kill()
        for slot in self.scheduler.slots:
            slot.reap()
        try:
            if self.scheduler.broken is None:
                try:
                    self._await_write()
                    self._unresolved += self.scheduler.leftovers()
                    self._commit(wait=True)
                    if self._unresolved:  # ended by that write's aborts: stored with one more
                        self._commit(wait=True)
                    self._store.close_executor(self.scheduler.executor_id)
                except Exception as exc:  # the last writes failed: broken now, and what it owes is retried below
                    self._break(exc)
        finally:
            self._writer.stop()
            self._relay.close()
            if self.scheduler.broken is not None:
                self._settle_debts()
            if self._tmpdir is not None:  # a store of its own, which no one else reads: no debt outlives it
                self._store.dispose()
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            # A store named by the user is this process's shared handle (``Store.open``): its pooled
            # connections are the handle's, and disposing it here would orphan one a user thread has out.

    def _settle_debts(self) -> None:
        """A broken executor's last writes: its owed rows, then its own row closed, until they land.

        Tried once here; if the store still refuses (a full disk), a daemon
        thread tries again every ``RETRY_OWED`` s for as long as the process
        lives, so that readers in other processes see final states once the
        store takes writes again, and not only once this process is gone
        (recovery needs its pid gone). A thread that cannot start (at the
        interpreter's exit) leaves them to that recovery.
        """
        if self._write_owed() or self._tmpdir is not None:
            return
        thread = threading.Thread(target=self._retry_owed, name="localabort-owed", daemon=True)
        try:
            start_thread(thread)
        except RuntimeError:  # the interpreter is exiting: recovery ends the rows once this process is gone
            pass

    def _write_owed(self) -> bool:
        """Write the owed rows and close this executor's row; whether the store took them."""
        try:
            if self._owed:
                self._store.write(self._owed)
                self._owed = []
            self._store.close_executor(self.scheduler.executor_id)
        except Exception:
            return False
        return True

    def _retry_owed(self) -> None:
        while not self._store.replaced() and not self._write_owed():
            time.sleep(RETRY_OWED)


class Workers:
    """An executor's first worker processes, started before its store opens.

    Workers need nothing of the store to start, so they start first: under
    spawn and forkserver each one's interpreter starts while this process
    opens the store, and under fork they are forked before it, smaller. The manager takes them over.
    """

    def __init__(self, ctx: Context, count: int, setup: WorkerSetup) -> None:
        self.ctx, self.setup = ctx, setup
        self.array = allocate(ctx, count)
        self.slots: List[Slot] = []
        try:
            for index in range(count):
                self.slots.append(Slot(ctx, index, self.array, setup))
        except BaseException:  # no more processes, say: none of those started is left behind
            self.kill()
            raise

    def kill(self) -> None:
        """Kill and reap them all (the executor could not start)."""
        for slot in self.slots:
            slot.kill()
        for slot in self.slots:
            slot.reap(timeout=1.0)
        self.slots.clear()
