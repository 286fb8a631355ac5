"""The executor: a process pool whose every task state lives in the store.

Data flow::

    submit() / map()                                    store (SQLite, WAL)
      |  pickle (task, args) in the caller's thread          ^
      v                                                      | one upsert per
    queue (deque of jobs)  --wake pipe-->  manager thread ---+ loop, batched
                                             |   ^
                          job over the       |   | ("p", progress) and
                          slot's own pipe    v   | ("r", outcome) replies
                                           worker processes, one job each
      future.abort() ----------------------> flags[slot] = seq  (shared memory)
      AbortableAsyncResult(id).abort() --> store --polled every 20 ms--> manager --> flags

The caller's thread pickles a job's task and arguments (an unpicklable
argument fails that future at once), appends the job to the queue and
wakes the manager through a pipe.

The manager thread is the only thread that talks to workers. Each loop it
waits on the wake pipe, the pipes of busy workers and every worker's
process sentinel; reads replies; replaces dead workers (their job fails
with ``WorkerLost``); sends queued jobs to idle workers; then writes every
changed row to the store in one transaction, and only then completes the
futures of the finished jobs, so a final state is stored before anyone
sees it.

A worker runs one job at a time, so the manager always knows which job a
dead worker took with it.

Aborting is a shared-memory write: the parent writes a job's ``seq`` into
its slot's word, and the task's ``is_aborted()`` compares the two. The
request itself goes to the store first, in its own column, so no later
state write undoes it. Aborts made elsewhere reach the manager through the
store, which it polls while jobs run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import _task
from ._errors import TaskAborted, TimeLimitExceeded, WorkerLost
from ._future import AbortableFuture, load_outcome
from ._pool import Slot
from ._states import ABORTED, FAILURE, PENDING, STARTED, SUCCESS
from ._store import Store, StoreSpec

__all__ = ["Executor"]

_QUEUED, _RUNNING, _DONE = "queued", "running", "done"
_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class _Job:
    __slots__ = (
        "id", "seq", "name", "key", "future", "blob", "chunked", "status", "slot", "state",
        "submitted_at", "started_at", "finished_at", "progress", "result", "traceback",
        "abort_requested", "soft_time_limit", "time_limit", "soft_deadline", "hard_deadline", "lost",
    )  # fmt: skip

    def __init__(self, task_id: str, seq: int, name: str, key: Optional[str], controller: Any) -> None:
        self.id, self.seq, self.name, self.key = task_id, seq, name, key
        self.future = AbortableFuture(task_id, controller)
        self.blob: Optional[bytes] = None
        self.chunked = False
        self.status = _QUEUED
        self.slot: Optional[Slot] = None
        self.state = PENDING
        self.submitted_at = time.time()
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.progress: Optional[Tuple[float, Optional[float]]] = None
        self.result: Optional[bytes] = None
        self.traceback: Optional[str] = None
        self.abort_requested = False
        self.soft_time_limit: Optional[float] = None
        self.time_limit: Optional[float] = None
        self.soft_deadline = self.hard_deadline = float("inf")
        self.lost: Optional[BaseException] = None  # why the parent killed its worker

    def end(self, state: str, exc: Optional[BaseException] = None) -> None:
        """Record a final state decided in the parent (the task did not report one)."""
        self.status, self.state, self.finished_at = _DONE, state, time.time()
        if exc is not None:
            self.result = _dumps(exc, _PROTOCOL)


def _task_name(task: Any) -> str:
    qualname = getattr(task, "__qualname__", None) or type(task).__qualname__
    module = getattr(task, "__module__", None) or type(task).__module__
    return f"{module}.{qualname}"


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` that runs abortable tasks in child processes.

    Args:
        max_workers: worker processes; default ``os.cpu_count()``.
        store: a SQLite file path or an SQLAlchemy URL. ``None`` makes a
            private temporary SQLite file, removed at shutdown. A path is
            created (0600) if missing and reused if present.
        mp_context: a ``multiprocessing`` context or start method name
            (``"fork"``, ``"spawn"``, ``"forkserver"``); default the
            platform's default.
        poll_interval: seconds between reads of the store for aborts
            requested by other processes, while tasks run.

    Raises:
        StoreError: the store cannot be opened or written; the message names it.

    >>> from localabort import Executor
    >>> with Executor(max_workers=2) as ex:
    ...     list(ex.map(abs, [-1, -2, 3]))
    [1, 2, 3]
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        store: Optional[StoreSpec] = None,
        *,
        mp_context: Union[None, str, Any] = None,
        poll_interval: float = 0.02,
    ) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if max_workers <= 0:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if mp_context is None or isinstance(mp_context, str):
            mp_context = multiprocessing.get_context(mp_context)
        self._tmpdir: Optional[str] = None
        if store is None:
            self._tmpdir = tempfile.mkdtemp(prefix="localabort-")
            store = os.path.join(self._tmpdir, "store.sqlite")
        self._store = Store(store) if self._tmpdir else Store.open(store)
        self.id = uuid.uuid4().hex
        self._store.register_executor(self.id, socket.gethostname(), os.getpid())

        self._max_workers = max_workers
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._queue: Deque[_Job] = collections.deque()
        self._jobs: Dict[str, _Job] = {}  # every job not finished, by id
        self._dirty: Dict[str, _Job] = {}  # jobs whose row the store must get
        self._abort_rows: List[Dict[str, Any]] = []  # abort requests the manager must record
        self._seq = itertools.count(1)
        self._shutdown = self._terminating = False
        self._broken: Optional[BaseException] = None
        self._flags = mp_context.RawArray("q", max_workers)
        self._slots = [Slot(mp_context, i, self._flags, self._store.url) for i in range(max_workers)]
        self._ctx = mp_context
        self._wake_r, self._wake_w = os.pipe()
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)
        self._wake_pending = False
        self._next_poll = 0.0
        self._manager = threading.Thread(target=self._manage, name="localabort-manager", daemon=True)
        self._manager.start()
        _live_executors.add(self)

    @property
    def store(self) -> Store:
        """The store this executor writes every task's state to."""
        return self._store

    # -- submitting ------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AbortableFuture:
        """Run ``fn(*args, **kwargs)`` in a worker; ``fn`` is an ``AbortableTask`` subclass or a callable.

        A plain callable cannot be aborted once it has started.

        >>> with Executor(max_workers=1) as ex:
        ...     ex.submit(divmod, 7, 2).result(timeout=30)
        (3, 1)
        """
        return self.apply_async(fn, args, kwargs)

    def apply_async(
        self,
        task: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        task_id: Optional[str] = None,
        key: Optional[str] = None,
        soft_time_limit: Optional[float] = None,
        time_limit: Optional[float] = None,
    ) -> AbortableFuture:
        """``submit`` with options.

        Args:
            task_id: the id to give the task (new and unique); default a UUID.
            key: a stable name for the work: if the store holds a SUCCESS of
                the same task under this key, the future completes at once
                with that result and nothing runs.
            soft_time_limit, time_limit: override the task class's limits.

        >>> with Executor(max_workers=1) as ex:
        ...     ex.apply_async(pow, (2, 5), task_id="two-to-five").id
        'two-to-five'
        """
        return self._enqueue(task, tuple(args), kwargs or {}, task_id, key, soft_time_limit, time_limit)

    def _enqueue(
        self,
        task: Any,
        args: Any,
        kwargs: Dict[str, Any],
        task_id: Optional[str],
        key: Optional[str],
        soft_time_limit: Optional[float],
        time_limit: Optional[float],
        chunked: bool = False,
    ) -> AbortableFuture:
        if self._shutdown:
            raise RuntimeError("cannot submit to an Executor after shutdown()")
        if not callable(task):
            raise TypeError(f"{task!r} is not a task: pass an AbortableTask subclass or a callable")
        name = _task_name(task)
        if key is not None:
            done = self._store.find_success(name, key)
            if done is not None:
                return _completed(done.id, done.result, done.progress)
        job = _Job(task_id or str(uuid.uuid4()), next(self._seq), name, key, self)
        job.chunked = chunked
        job.soft_time_limit = soft_time_limit if soft_time_limit is not None else getattr(task, "soft_time_limit", None)
        job.time_limit = time_limit if time_limit is not None else getattr(task, "time_limit", None)
        try:
            job.blob = _dumps((task, args, kwargs), _PROTOCOL)
        except Exception as exc:
            job.end(FAILURE, TypeError(
                f"cannot send {name} to a worker: {exc}; use a module-level task and picklable arguments"
            ))  # fmt: skip
            self._store.write([self._row(job)])
            self._complete([job])
            return job.future
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an Executor after shutdown()")
            if self._broken is not None:
                raise concurrent.futures.BrokenExecutor(f"the executor stopped: {self._broken}")
            self._queue.append(job)
            self._jobs[job.id] = job
            self._dirty[job.id] = job
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._wake()
        return job.future

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[Any]:
        """Like ``map(fn, *iterables)``, run in the workers; results in order.

        ``chunksize`` items go to a worker as one task. ``buffersize`` bounds
        the tasks in flight, so an endless iterable runs in bounded memory.

        >>> with Executor(max_workers=2) as ex:
        ...     list(ex.map(pow, [2, 3], [3, 2], chunksize=2, buffersize=4))
        [8, 9]
        """
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        if buffersize is not None and buffersize < 1:
            raise ValueError(f"buffersize must be at least 1, not {buffersize}")
        deadline = None if timeout is None else time.monotonic() + timeout
        items: Iterator[Any] = zip(*iterables)
        if chunksize > 1:
            items = iter(lambda: list(itertools.islice(items, chunksize)), [])  # type: ignore[arg-type]

        def submit(item: Any) -> AbortableFuture:
            if chunksize > 1:
                return self._enqueue(fn, item, {}, None, None, None, None, chunked=True)
            return self._enqueue(fn, item, {}, None, None, None, None)

        pending = collections.deque(map(submit, itertools.islice(items, buffersize)))
        return self._results(pending, items if buffersize else iter(()), submit, deadline, chunksize > 1)

    def _results(
        self, pending: Deque[AbortableFuture], rest: Iterator[Any], submit: Callable[[Any], AbortableFuture],
        deadline: Optional[float], chunked: bool,
    ) -> Iterator[Any]:  # fmt: skip
        try:
            while pending:
                future = pending.popleft()
                for item in itertools.islice(rest, 1):
                    pending.append(submit(item))
                value = future.result(None if deadline is None else deadline - time.monotonic())
                if chunked:
                    yield from value
                else:
                    yield value
        finally:
            for future in pending:
                future.cancel()

    # -- aborting --------------------------------------------------------------

    def abort_all(self) -> int:
        """Ask every task of this executor not yet finished to abort; return how many.

        Tasks that have not started end ABORTED at once; running ones see
        the request at their next ``is_aborted()``.
        """
        with self._lock:
            asked = [job for job in self._jobs.values() if not job.abort_requested]
            ended = [job for job in asked if self._mark_aborted(job)]
            rows = [self._row(job, abort=True) for job in asked]
        self._store.write([self._row(job) for job in ended], aborts=rows)
        self._complete(ended)
        return len(asked)

    def _mark_aborted(self, job: _Job) -> bool:
        """Under the lock: flag ``job`` aborted; end it if queued. Return whether it ended."""
        job.abort_requested = job.future._abort_requested = True
        if job.status == _QUEUED:
            job.end(ABORTED, TaskAborted(f"task {job.id} aborted before it started", task_id=job.id))
            del self._jobs[job.id]
            self._dirty[job.id] = job
            return True
        if job.status == _RUNNING and job.slot is not None:
            self._flags[job.slot.index] = job.seq
        return False

    def _abort(self, future: AbortableFuture) -> bool:
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
            self._complete([job])
        return True

    def _cancel(self, future: AbortableFuture) -> bool:
        with self._lock:
            job = self._jobs.get(future.id)
            if job is None or job.status != _QUEUED:
                return future.cancelled()
            job.end(ABORTED, TaskAborted(f"task {job.id} cancelled before it started", task_id=job.id))
            del self._jobs[job.id]
            row = self._row(job)
        self._store.write([row])
        future._la_state = ABORTED
        concurrent.futures.Future.cancel(future)
        future.set_running_or_notify_cancel()
        return True

    # -- shutting down ---------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; let queued and running ones finish, then stop the workers.

        ``cancel_futures=True`` cancels the tasks that have not started
        (state ABORTED). With ``wait=False`` it returns at once and the pool
        winds down in the background.
        """
        with self._lock:
            self._shutdown = True
            queued = [job for job in self._queue if job.status == _QUEUED] if cancel_futures else []
        for job in queued:
            job.future.cancel()
        self._wake()
        if wait:
            self._manager.join()

    def __enter__(self) -> Executor:
        _task._active_executors.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self in _task._active_executors:
            _task._active_executors.remove(self)
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            try:
                self.shutdown(wait=True)
                return False
            except KeyboardInterrupt:
                self._interrupted()
                raise
        self._interrupted()
        return False

    def _interrupted(self) -> None:
        """Ctrl-C: abort everything and wait; a second Ctrl-C terminates the workers."""
        self.abort_all()
        try:
            self.shutdown(wait=True)
        except KeyboardInterrupt:
            self._terminate()

    def _terminate(self) -> None:
        """Kill every worker now; their tasks end ABORTED."""
        with self._lock:
            self._terminating = self._shutdown = True
            slots = list(self._slots)
        for slot in slots:
            slot.kill()
        self._manager.join()

    # -- the manager thread ----------------------------------------------------

    def _wake(self) -> None:
        os.write(self._wake_w, b"\0")

    def _manage(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # a store or pool failure: fail what is left, loudly
            self._break(exc)
        finally:
            self._close()

    def _step(self) -> bool:
        """One loop of the manager; returns ``False`` when it is time to stop."""
        waitables: Dict[Any, Optional[Slot]] = {self._wake_r: None}
        busy = False
        for slot in self._slots:
            waitables[slot.sentinel] = slot
            if slot.job is not None:
                waitables[slot.conn] = slot
                busy = True
        ready = multiprocessing.connection.wait(list(waitables), self._timeout() if busy else None)
        finished: List[_Job] = []
        for obj in ready:
            slot = waitables[obj]
            if slot is None:
                with self._lock:
                    self._wake_pending = False
                os.read(self._wake_r, 65536)
            elif self._slots[slot.index] is slot:  # not replaced earlier in this loop
                if obj is slot.conn:
                    self._receive(slot, finished)
                else:
                    self._replace(slot, finished)
        now = time.monotonic()
        if busy and now >= self._next_poll:
            self._next_poll = now + self._poll_interval
            self._poll_aborts(finished)
        self._enforce_limits(now)
        for slot, message in self._dispatch():
            try:
                slot.send(message)
            except OSError:  # the worker died; its sentinel says so next loop
                pass
        self._flush()
        self._complete(finished)
        with self._lock:
            return not (self._shutdown and not self._jobs and all(s.job is None for s in self._slots))

    def _timeout(self) -> float:
        soonest = min(
            (min(s.job.soft_deadline, s.job.hard_deadline) for s in self._slots if s.job is not None),
            default=float("inf"),
        )
        return max(0.0, min(self._next_poll, soonest) - time.monotonic())

    def _receive(self, slot: Slot, finished: List[_Job]) -> None:
        """Read every message the worker in ``slot`` has sent."""
        try:
            while True:
                self._handle(slot, pickle.loads(slot.conn.recv_bytes()), finished)
                if not slot.conn.poll():
                    return
        except (EOFError, OSError):
            self._replace(slot, finished)

    def _handle(self, slot: Slot, message: Tuple[Any, ...], finished: List[_Job]) -> None:
        job = slot.job
        if job is None or message[1] != job.seq:  # pragma: no cover - a reply for no job
            return
        if message[0] == "p":
            job.progress = job.future._la_progress = (message[2], message[3])
            with self._lock:
                self._dirty[job.id] = job
        else:
            _, _, state, blob, tb, progress = message
            slot.job = None
            self._finish(job, state, blob, tb, progress, finished)

    def _finish(self, job: _Job, state: str, blob: Optional[bytes], tb: Optional[str], progress: Any,
                finished: List[_Job]) -> None:  # fmt: skip
        with self._lock:
            job.status, job.state, job.finished_at = _DONE, state, time.time()
            job.result, job.traceback = blob, tb
            if progress is not None:
                job.progress = progress
            self._jobs.pop(job.id, None)
            self._dirty[job.id] = job
        finished.append(job)

    def _replace(self, slot: Slot, finished: List[_Job]) -> None:
        """The worker in ``slot`` is gone: fail its job and start a new worker."""
        try:
            while slot.job is not None and slot.conn.poll():  # replies sent before it died
                self._handle(slot, pickle.loads(slot.conn.recv_bytes()), finished)
        except (EOFError, OSError):
            pass
        slot.reap(timeout=1.0)
        job, slot.job = slot.job, None
        if job is not None:
            if self._terminating:
                state, exc = ABORTED, job.lost or TaskAborted(f"task {job.id} terminated", task_id=job.id)
            else:
                state = FAILURE
                exc = job.lost or WorkerLost(
                    f"the worker (pid {slot.pid}) running {job.name} [{job.id}] {slot.exit_reason()}"
                )
            self._finish(job, state, _dumps(exc, _PROTOCOL), None, None, finished)
        with self._lock:
            restart = not self._terminating and not (self._shutdown and not self._queue)
        if restart:
            self._slots[slot.index] = Slot(self._ctx, slot.index, self._flags, self._store.url)

    def _poll_aborts(self, finished: List[_Job]) -> None:
        """Honour aborts that other processes recorded in the store."""
        ids = self._store.aborts_requested(self.id)
        with self._lock:
            for task_id in ids:
                job = self._jobs.get(task_id)
                if job is not None and not job.abort_requested and self._mark_aborted(job):
                    finished.append(job)

    def _enforce_limits(self, now: float) -> None:
        for slot in self._slots:
            job = slot.job
            if job is None:
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

    def _dispatch(self) -> List[Tuple[Slot, bytes]]:
        """Give queued jobs to idle workers; return the messages to send."""
        sends = []
        now = time.monotonic()
        with self._lock:
            for slot in self._slots:
                if slot.job is not None or self._terminating:
                    continue
                job = None
                while self._queue:
                    job = self._queue.popleft()
                    if job.status == _QUEUED:
                        break
                    job = None
                if job is None:
                    break
                job.status, job.state, job.slot, slot.job = _RUNNING, STARTED, slot, job
                job.started_at = time.time()
                if job.soft_time_limit is not None:
                    job.soft_deadline = now + job.soft_time_limit
                if job.time_limit is not None:
                    job.hard_deadline = now + job.time_limit
                self._dirty[job.id] = job
                sends.append((slot, job))
        messages = []
        for slot, job in sends:
            job.future.set_running_or_notify_cancel()
            job.future._la_state = STARTED
            messages.append((slot, _dumps((job.seq, job.id, job.blob, job.chunked), _PROTOCOL)))
            job.blob = None
        return messages

    def _flush(self) -> None:
        with self._lock:
            if not self._dirty and not self._abort_rows:
                return
            rows = [self._row(job) for job in self._dirty.values()]
            aborts, self._dirty, self._abort_rows = self._abort_rows, {}, []
        self._store.write(rows, aborts=aborts)

    def _row(self, job: _Job, abort: bool = False) -> Dict[str, Any]:
        done, total = job.progress if job.progress is not None else (None, None)
        row = {
            "id": job.id, "executor_id": self.id, "name": job.name, "key": job.key, "state": job.state,
            "submitted_at": job.submitted_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "progress_done": done, "progress_total": total, "result": job.result, "traceback": job.traceback,
        }  # fmt: skip
        if abort:
            row["abort_requested_at"] = time.time()
        return row

    def _complete(self, jobs: List[_Job]) -> None:
        """Resolve the futures of finished jobs; their rows are already stored."""
        for job in jobs:
            future = job.future
            future._la_progress = job.progress
            future._la_state = job.state
            try:
                value, exc = load_outcome(job.state, job.result, job.traceback)
            except Exception as err:  # the parent cannot unpickle what the child sent
                value, exc = None, err
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)

    def _break(self, exc: BaseException) -> None:
        """The manager failed: every unfinished future fails with ``BrokenExecutor``."""
        with self._lock:
            self._broken, self._shutdown = exc, True
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._queue.clear()
        error = concurrent.futures.BrokenExecutor(f"the localabort executor stopped: {exc!r}")
        for job in jobs:
            job.future._la_state = FAILURE
            if not job.future.done():
                job.future.set_exception(error)
        for slot in self._slots:
            slot.kill()

    def _close(self) -> None:
        for slot in self._slots:
            if slot.job is None:
                slot.ask_to_stop()
            else:
                slot.kill()
        for slot in self._slots:
            slot.reap()
        try:
            if self._broken is None:
                self._flush()
                self._store.close_executor(self.id)
        finally:
            if self._tmpdir is not None:
                self._store.dispose()
                shutil.rmtree(self._tmpdir, ignore_errors=True)
        _live_executors.discard(self)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _completed(task_id: str, blob: Optional[bytes], progress: Any) -> AbortableFuture:
    """A future already holding a stored SUCCESS (``key=`` resume)."""
    future = AbortableFuture(task_id)
    future._la_state, future._la_progress = SUCCESS, progress
    future.set_result(load_outcome(SUCCESS, blob, None)[0])
    return future


_live_executors: "weakref.WeakSet[Executor]" = weakref.WeakSet()


def _shutdown_live_executors() -> None:
    for executor in list(_live_executors):
        executor.shutdown(wait=True)


if hasattr(threading, "_register_atexit"):  # run before the interpreter joins threads, as CPython's own pools do
    threading._register_atexit(_shutdown_live_executors)  # type: ignore[attr-defined]
else:  # pragma: no cover
    import atexit

    atexit.register(_shutdown_live_executors)
