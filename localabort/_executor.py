"""The executor: a process pool whose every task state lives in the store.

Data flow::

    submit() / map()                                    store (SQLite, WAL)
      |  pickle (task, args) in the caller's thread          ^
      v                                                      | recorder process: one
    scheduler: queue of jobs --wake pipe--> manager thread --+ transaction per group commit
                                             |   ^
                          Call, over the     |   | Report (progress) and
                          slot's own pipe    v   | Reply (outcome)
                                           worker processes: one job running, more sent ahead
      future.abort() --> scheduler --> the job's abort word = seq  (shared memory)
      AbortableAsyncResult(id).abort() --> store --polled every 20 ms--> manager --> scheduler

The actors, each in its module:

- The caller's thread (``Executor``, here) pickles a job's task and
  arguments (an unpicklable argument fails that future at once), and hands
  the job to the scheduler, which queues it and wakes the manager.
- The scheduler (``_scheduler``) is the one state machine: the queue, the
  unfinished jobs, what each worker slot holds, and the rows owed to the
  store, under one lock. Submit, abort, cancel and shutdown change it from
  user threads; the manager thread changes it for everything else.
- The manager thread (``_manager``, whose docstring gives its loop step
  by step) waits on the workers' pipes and process sentinels; reads
  replies; replaces dead workers; reads the store for aborts asked
  elsewhere; enforces time limits; sends claimed jobs to workers; and
  has changed rows written in group commits (by the recorder, a process of
  its own: ``_recorder``), each of which also claims the next
  queued jobs (RECEIVED) and reads their aborts, so no job starts that an
  abort from anywhere came before; it completes the futures of finished
  jobs only after their rows are written, so a final state is stored
  before anyone sees it.
- A worker slot (``_slot``) is one process and its pipe; the worker
  (``_worker``) runs one job at a time, in the order sent, and answers each
  (``_messages``), so the manager always knows which job a dead worker
  took with it; the jobs sent ahead, never reached, run on the replacement.
  A worker holds from one job ahead to ``DEPTH - 1`` (``_words``), about
  5 ms of work (``Scheduler.timed``), its calls in one message; a
  ``submit()`` that finds a worker idle and none queued claims the job
  and sends it from the caller's thread (``Scheduler.enqueue``).
- The abort words (``_words``): aborting a job is a shared-memory write the
  task's ``is_aborted()`` reads, and a job sent ahead is claimed by its
  worker under a hand-over lock, so an abort that wins it ends the job
  unrun at once. The abort request is also written to the store, in its
  own column, so no later state write undoes it; aborts asked by other
  processes reach the manager through the store.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.context
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Optional,
    Set,
    TextIO,
    Tuple,
    Union,
    cast,
)

from . import _task
from ._byvalue import dumps, portable
from ._capture import DEFAULT_LOG_LIMIT
from ._future import AbortableFuture, check_terminate_after, release_making
from ._interrupt import (
    deferred,
    keep_exiting_as_interrupted,
    release_leaked,
    start_thread,
    stop_on_interrupt,
    stop_on_signals,
)
from ._jobs import Job, completed
from ._manager import Manager, Workers
from ._memory import parse_size
from ._scheduler import Scheduler
from ._states import FAILURE, SUCCESS, new_id
from ._task import task_name
from ._text import call_repr
from ._worker import MAIN_UNGUARDED, WorkerSetup

if TYPE_CHECKING:
    from ._slot import Context
    from ._store import Store, StoreSpec

__all__ = ["Executor"]


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` that runs abortable tasks in child processes.

    Args:
        max_workers: worker processes; default ``os.cpu_count()``.
        store: a SQLite file path or an SQLAlchemy URL. ``None`` makes a
            private temporary SQLite file, removed at shutdown. A path is
            created (0600) if missing and reused if present.
        mp_context: a ``multiprocessing`` context or start method name
            (``"fork"``, ``"spawn"``, ``"forkserver"``); default the
            platform's default (``"spawn"`` with ``max_tasks_per_child``).
        initializer: called as ``initializer(*initargs)`` in each worker
            when it starts (open a connection, load a model), as in
            ``ProcessPoolExecutor``. If it raises, the executor stops:
            every unfinished task fails with ``BrokenExecutor`` naming the
            error, and ``submit`` raises it, since every worker would fail
            the same way.
        initargs: the arguments of ``initializer``.
        max_tasks_per_child: a worker exits after this many tasks and a
            new one takes its place (for code that leaks). Not with
            ``fork``, as in ``ProcessPoolExecutor``.
        progress: ``True`` shows progress bars on stderr (the batch, and
            each running task's ``self.progress()``) until shutdown; a
            file object shows them there instead.
        poll_interval: seconds between reads of the store for aborts
            requested by other processes, while tasks run.
        dashboard: ``True`` serves a live page of the store on
            127.0.0.1 (a free port) until the pool stops, and prints its
            URL, which carries the page's token, once on stderr (needs
            ``pip install "localabort[web]"``; ``localabort serve STORE``
            serves the same page from another process, for longer).
        log_limit: bytes of each task's log the store keeps: the last
            ones of what it printed to ``sys.stdout`` and ``sys.stderr``
            and of the ``logging`` records it emitted (``future.logs``,
            ``localabort logs``); ``0`` keeps none. What a task prints
            still reaches the terminal, and its records the handlers:
            under spawn and forkserver, this process's.
        terminate_after: the grace of an abort that names none
            (``future.abort()``, ``abort_all()``, a cancelled ``await``,
            Ctrl-C): a task still running that many seconds after it was
            asked is stopped by killing its worker, as
            ``abort(terminate_after=...)`` does. ``None`` (the default):
            such aborts only ask. An abort from another process
            (``AbortableAsyncResult.abort()``, the CLI) gives only its own.
        max_memory_per_child: bytes, or a size such as ``"1GiB"`` (Celery's
            ``worker_max_memory_per_child``): a worker whose resident memory
            is above it when a task ends exits, and a new one takes its
            place before its next task; under every start method.

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
        mp_context: Union[str, Any, None] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Tuple[Any, ...] = (),
        max_tasks_per_child: Optional[int] = None,
        progress: Union[bool, TextIO] = False,
        poll_interval: float = 0.02,
        dashboard: bool = False,
        log_limit: int = DEFAULT_LOG_LIMIT,
        terminate_after: Optional[float] = None,
        max_memory_per_child: Optional[Union[int, str]] = None,
    ) -> None:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A worker importing the main script (spawn, forkserver) got here: the script has no
            # ``if __name__ == "__main__":`` guard. Leave quietly; the parent says why, in one line.
            sys.exit(MAIN_UNGUARDED)
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0, not {max_workers}")
        if isinstance(store, multiprocessing.context.BaseContext):
            raise TypeError("Executor's second argument is the store; pass the context as mp_context=...")
        _check_log_limit(log_limit)
        check_terminate_after(terminate_after)
        max_memory = parse_size(max_memory_per_child, "max_memory_per_child")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, not {initializer!r}")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or max_tasks_per_child <= 0:
                raise ValueError(f"max_tasks_per_child must be an integer greater than 0, not {max_tasks_per_child!r}")
            if mp_context is None:
                mp_context = "spawn"
        if mp_context is None or isinstance(mp_context, str):
            mp_context = multiprocessing.get_context(mp_context)
        if max_tasks_per_child is not None and mp_context.get_start_method(allow_none=False) == "fork":
            raise ValueError(
                "max_tasks_per_child is incompatible with the 'fork' start method (each new worker would be "
                "forked from a process running threads); pass mp_context='spawn' or 'forkserver'"
            )
        _check_main_importable(mp_context.get_start_method(allow_none=False))
        if dashboard:
            from ._web import missing

            problem = missing()
            if problem is not None:
                raise ImportError(problem)
        ctx = cast("Context", mp_context)
        self._tmpdir: Optional[str] = None
        if store is None:
            self._tmpdir = tempfile.mkdtemp(prefix="localabort-")
            store = os.path.join(self._tmpdir, "store.sqlite")
        self._max_workers = max_workers
        self._terminate_after = terminate_after
        self._dashboard = None
        # The workers start first: they need nothing of the store, and start while it opens (``Workers``).
        if initializer is not None and mp_context.get_start_method(allow_none=False) != "fork":
            try:  # a lambda or a notebook's function goes by value; what cannot be sent fails here, in one line
                initializer = portable(initializer)
            except Exception as exc:
                raise TypeError(f"cannot send the initializer {initializer!r} to the workers: {exc}") from None
        setup = WorkerSetup(_url_of(store), initializer, tuple(initargs), max_tasks_per_child, log_limit,
                            logging.getLogger().getEffectiveLevel(), max_memory)  # fmt: skip
        workers = Workers(ctx, max_workers, setup)
        self.id = uuid.uuid4().hex
        opened: Optional[Store] = None
        try:
            from ._store import Store  # here, not in workers that import this module

            # The one opener that creates a store, or upgrades an older one (``_schema.MIGRATIONS``).
            self._store = opened = Store.open(store, create=True) if self._tmpdir is None else Store(store)  # type: ignore[arg-type]
            self._store.register_executor(self.id)
            self._scheduler = Scheduler(self._store, self.id, max_tasks_per_child)
            if dashboard:  # started workers hold no copy of its socket: they were forked before it
                from ._web import Dashboard

                self._dashboard = Dashboard(self._store)
            self._manager = Manager(self._scheduler, workers, poll_interval, self._tmpdir)
        except BaseException:  # no worker left running, no executor left open in the store
            workers.kill()
            if self._dashboard is not None:
                self._dashboard.stop()  # never started: closes its socket and its store handle
            if opened is not None:
                with contextlib.suppress(Exception):  # the error raised below says what failed
                    opened.close_executor(self.id)
                if self._tmpdir is not None:
                    opened.dispose()
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            raise
        self._watched: Optional[List[AbortableFuture]] = None
        self._progress: Optional[threading.Thread] = None
        if progress:
            self._watched = []
            out = None if progress is True else progress
            # Not a daemon: the interpreter's exit waits for its last drawing, after the exit hook below.
            self._progress = threading.Thread(target=self._show_progress, args=(out,), name="localabort-progress")
            start_thread(self._progress)
        _running.add(self._manager)
        self._manager.start(on_stop=_running.discard)
        if self._dashboard is not None:
            try:
                self._dashboard.start(until=self._scheduler.stopped)
            except BaseException:
                self.shutdown()  # nothing submitted yet: the workers stop at once
                raise
            url = f"{self._dashboard.url}&executor={self.id}"  # the page opens on this batch
            print(f"localabort: dashboard of this batch at {url}", file=sys.stderr, flush=True)
        stop_on_signals(_busy)  # SIGTERM and SIGHUP stop the batch as Ctrl-C does (see ``_interrupt``)
        # Dropped without shutdown() (``del ex``, a function that returns): finish the work, then stop,
        # as ProcessPoolExecutor does. At the interpreter's exit the exit hook decides instead.
        weakref.finalize(self, self._scheduler.abandon).atexit = False

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
        argsrepr: Optional[str] = None,
        kwargsrepr: Optional[str] = None,
        log_limit: Optional[int] = None,
        terminate_after: Optional[float] = None,
        soft_memory_limit: Optional[Union[int, str]] = None,
        memory_limit: Optional[Union[int, str]] = None,
        **retry: Any,
    ) -> AbortableFuture:
        """``submit`` with options.

        Args:
            task_id: the id to give the task (new and unique); default a UUID.
            key: a stable name for the work: if the store holds a SUCCESS of
                the same task under this key, the future completes at once
                with that result and nothing runs.
            soft_time_limit: overrides the task class's ``soft_time_limit``
                (seconds; then the task is asked to abort).
            time_limit: overrides the task class's ``time_limit`` (seconds;
                then its worker is killed).
            soft_memory_limit: overrides the task class's
                ``soft_memory_limit`` (bytes, or a size such as ``"512MiB"``:
                past it, the task is asked to abort).
            memory_limit: overrides the task class's ``memory_limit`` (past
                it, its worker is killed).
            argsrepr: the text the store keeps for the positional arguments,
                instead of their shortened ``repr`` (Celery's name): keeps a
                secret out of the store, the dashboard and ``localabort show``.
            kwargsrepr: the same, for the keyword arguments.
            log_limit: overrides the executor's ``log_limit`` for this call
                (bytes of the task's log the store keeps; ``0``: none).
            terminate_after: overrides the executor's ``terminate_after``
                for this call (seconds an abort that names no grace gives
                the task before its worker is killed).
            **retry: override the task class's retry settings for this call:
                ``max_retries``, ``autoretry_for``, ``default_retry_delay``,
                ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``.

        >>> with Executor(max_workers=1) as ex:
        ...     ex.apply_async(pow, (2, 5), task_id="two-to-five").id
        'two-to-five'
        """
        unknown = sorted(set(retry) - set(_task.RETRY_OPTIONS))
        if unknown:
            raise TypeError(f"apply_async() got unknown option(s) {', '.join(unknown)}; "
                            f"the retry options are {', '.join(_task.RETRY_OPTIONS)}")  # fmt: skip
        if log_limit is not None:
            _check_log_limit(log_limit)
        check_terminate_after(terminate_after)
        memory = (None, None) if soft_memory_limit is None and memory_limit is None else (
            parse_size(soft_memory_limit, "soft_memory_limit"), parse_size(memory_limit, "memory_limit"))  # fmt: skip
        return self._enqueue(task, tuple(args), kwargs or {}, task_id, key, soft_time_limit, time_limit, retry=retry,
                             argsrepr=argsrepr, kwargsrepr=kwargsrepr, log_limit=log_limit,
                             terminate_after=terminate_after, memory=memory)  # fmt: skip

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
        retry: Optional[Dict[str, Any]] = None,
        argsrepr: Optional[str] = None,
        kwargsrepr: Optional[str] = None,
        log_limit: Optional[int] = None,
        terminate_after: Optional[float] = None,
        memory: Tuple[Optional[int], Optional[int]] = (None, None),
    ) -> AbortableFuture:
        self._scheduler.check_open()
        if not callable(task):
            raise TypeError(f"{task!r} is not a task: pass an AbortableTask subclass or a callable")
        name = sys.intern(task_name(task))  # one string for every job of the task, not one each
        taken, holder = False, None
        if task_id is not None or key is not None:  # the store is read: a Ctrl-C inside its pool would leak a lock
            with deferred():
                taken = task_id is not None and self._store.get(task_id) is not None
                if key is not None and self._scheduler.keyed_future(name, key) is None:
                    holder = self._store.find_key(name, key)
        if taken:
            raise ValueError(
                f"task_id {task_id!r} is taken by a task in the store; ids are unique (leave task_id out for a new "
                "one, or give key= to run a piece of work once)"
            )
        if key is not None:  # a key runs once at a time: the task that holds it, here or elsewhere, is followed
            local = self._scheduler.keyed_future(name, key)
            if local is not None:
                return local
            if holder is not None and holder.state == SUCCESS:
                return self._watch(completed(holder.id, holder.result, holder.progress), name, key)
        job = Job(task_id or new_id(), self._scheduler.next_seq(), name, key, self._scheduler)
        job.follows = None if holder is None else holder.id
        job.chunked = chunked
        job.options = retry or None
        job.log_limit = log_limit
        job.grace = terminate_after if terminate_after is not None else self._terminate_after
        job.soft_time_limit = soft_time_limit if soft_time_limit is not None else getattr(task, "soft_time_limit", None)
        job.time_limit = time_limit if time_limit is not None else getattr(task, "time_limit", None)
        soft, hard = memory
        if soft is None and getattr(task, "soft_memory_limit", None) is not None:
            soft = parse_size(task.soft_memory_limit, f"{name}.soft_memory_limit")
        if hard is None and getattr(task, "memory_limit", None) is not None:
            hard = parse_size(task.memory_limit, f"{name}.memory_limit")
        job.memory = None if soft is None and hard is None else (soft, hard)
        job.args_repr = call_repr(args, kwargs, argsrepr, kwargsrepr, most=3 if chunked else 12)
        try:
            job.blob = dumps((task, args, kwargs), name)
        except Exception as exc:  # the type pickle raised, as ProcessPoolExecutor gives it, with our words
            exc.args = (f"cannot send {name} to a worker: {exc}; its arguments, and what it uses from its "
                        "closure and globals, must be picklable",)  # fmt: skip
            job.end(FAILURE, exc)
            self._scheduler.fail_now(job)
            return self._watch(job.future, name, key)
        self._scheduler.enqueue(job)
        return self._watch(job.future, name, key)

    def _watch(self, future: AbortableFuture, name: str, key: Optional[str]) -> AbortableFuture:
        if self._watched is not None:
            future._task_name, future._task_key = name, key
            self._watched.append(future)
        return future

    def _show_progress(self, out: Optional[TextIO]) -> None:
        from .progress import Bars, TaskView, traceback_above_bars  # tqdm is imported only by those who ask for bars

        bars = Bars(file=out, max_tasks=self._max_workers)
        if not bars.plain:
            traceback_above_bars()
        watched = self._watched  # the executor's own list: submits append to it as the bars are drawn
        assert watched is not None
        try:
            while True:
                stopped = self._scheduler.stopped.wait(0.1)
                bars.update([TaskView(f.id, f._task_name, f.state, f.progress, f._task_key) for f in list(watched)])
                if stopped:
                    return
        finally:
            bars.close()

    def map(
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
            items = _chunks(items, chunksize)

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
        # No local may hold a result (or its future) while suspended at a yield: the caller may drop a
        # result and expect it freed (CPython issue 14406). So the head travels in a one-item list.
        head: List[AbortableFuture] = []
        try:
            while pending:
                head.append(pending.popleft())
                for item in itertools.islice(rest, 1):
                    pending.append(submit(item))
                timeout = None if deadline is None else deadline - time.monotonic()
                if not chunked:
                    yield _take_result(head, timeout)
                    continue
                chunk = _take_result(head, timeout)
                chunk.reverse()
                while chunk:
                    yield chunk.pop()
        finally:
            for future in [*head, *pending]:
                future.cancel()

    # -- aborting and shutting down ---------------------------------------------

    def abort_all(self) -> int:
        """Ask every task of this executor not yet finished to abort; return how many.

        Tasks that have not started end ABORTED at once; running ones see
        the request at their next ``is_aborted()``.

        >>> import time
        >>> with Executor(max_workers=1) as ex:
        ...     futures = [ex.submit(time.sleep, 0.2) for _ in range(3)]
        ...     while futures[0].state != "STARTED":
        ...         time.sleep(0.001)
        ...     asked = ex.abort_all()   # time.sleep cannot see it; the two queued never start
        >>> asked, [f.state for f in futures]
        (3, ['SUCCESS', 'ABORTED', 'ABORTED'])
        """
        return self._scheduler.abort_all()[0]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; let queued and running ones finish, then stop the workers.

        ``cancel_futures=True`` cancels the tasks that have not started
        (state ABORTED). With ``wait=False`` it returns at once and the pool
        winds down in the background.

        >>> ex = Executor(max_workers=1)
        >>> fut = ex.submit(pow, 3, 3)
        >>> ex.shutdown()
        >>> fut.result(), fut.state
        (27, 'SUCCESS')
        """
        self._scheduler.shutdown(wait, cancel_futures)
        if wait and self._progress is not None:
            self._progress.join()
        if wait and self._dashboard is not None:
            self._dashboard.stop()

    def terminate_workers(self) -> None:
        """Stop every worker now with SIGTERM, as Python 3.14's ``ProcessPoolExecutor`` does; then shut down.

        Unlike a crash, nothing is lost track of: every task not finished
        ends ABORTED (``TaskAborted`` says it was terminated), in the store
        too, before this returns. No task can be submitted afterwards.

        >>> import time
        >>> ex = Executor(max_workers=1)
        >>> fut = ex.submit(time.sleep, 60)
        >>> ex.terminate_workers()
        >>> fut.state
        'ABORTED'
        """
        self._manager.terminate(signal.SIGTERM)

    def kill_workers(self) -> None:
        """``terminate_workers``, with SIGKILL: for workers that ignore or handle SIGTERM.

        >>> ex = Executor(max_workers=1)
        >>> ex.kill_workers()
        >>> ex.submit(abs, -1)
        Traceback (most recent call last):
        ...
        RuntimeError: cannot schedule new futures after shutdown
        """
        self._manager.terminate(signal.SIGKILL)

    def __enter__(self) -> Executor:
        _task.entered(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        _task.exited(self)
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            try:
                self.shutdown(wait=True)
                return False
            except KeyboardInterrupt:
                self._interrupted()
                raise
        self._interrupted()
        return False

    async def __aenter__(self) -> Executor:
        """``async with Executor(...) as ex:``, in a coroutine: as ``with``, and its exit does not block the loop."""
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        """Wait for the batch off the event loop; a cancellation (of the block or of this wait) aborts it first.

        >>> import asyncio
        >>> async def main():
        ...     async with Executor(max_workers=2) as ex:
        ...         futures = [ex.submit(pow, 2, n) for n in range(4)]
        ...     return [f.result() for f in futures]
        >>> asyncio.run(main())
        [1, 2, 4, 8]
        """
        from ._aio import executor_exit

        _task.exited(self)
        await executor_exit(self.shutdown, self.abort_all, exc_type)
        return False

    def _interrupted(self) -> None:
        """Ctrl-C reached the ``with`` block: see ``_interrupt`` for the design."""
        release_leaked(self._manager.open_futures())
        release_making()
        try:
            stop_on_interrupt(self._scheduler.abort_all, self.shutdown, self._manager.terminate)
        finally:
            if self._progress is not None:  # its last drawing comes before the traceback, not over it
                self._progress.join()


def _url_of(store: StoreSpec) -> str:
    """The URL workers open the store by; for a path, made without SQLAlchemy, as ``_store._locate`` makes it."""
    url = getattr(store, "url", None)  # a Store
    if url is not None:
        return str(url)
    spec = os.fspath(cast("Union[str, os.PathLike[str]]", store))
    if "://" not in spec:
        return "sqlite:///" + os.path.abspath(os.path.expanduser(spec))
    from ._store import _locate

    return _locate(spec)[0]


def _check_log_limit(log_limit: Any) -> None:
    if isinstance(log_limit, bool) or not isinstance(log_limit, int) or log_limit < 0:
        raise ValueError(f"log_limit must be a number of bytes >= 0 (0 keeps no log), not {log_limit!r}")


def _check_main_importable(method: str) -> None:
    """Under spawn and forkserver, workers run the main script's file first: fail now if there is none."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)  # None: interactive, or python -c (workers then skip it)
    if method == "fork" or path is None or getattr(main, "__spec__", None) is not None or os.path.exists(path):
        return
    where = "stdin" if path == "<stdin>" else repr(path)
    raise RuntimeError(
        f"workers cannot import __main__ from {where}: under {method}, each worker first runs the main script's "
        "file; put the task in a module and run it as a file, or pass mp_context='fork'"
    )


def _take_result(head: List[AbortableFuture], timeout: Optional[float]) -> Any:
    """The result of the one future in ``head``, which is emptied (so nothing else keeps either).

    A future whose result does not come (a timeout, a Ctrl-C) is cancelled, as the rest are.
    """
    future = head.pop()
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise


def _chunks(items: Iterator[Any], size: int) -> Iterator[List[Any]]:
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


#: Managers whose thread runs, whether or not their ``Executor`` still exists: the exit hook waits for them.
_running: Set[Manager] = set()
# Nothing module-level crosses fork(): a forked child (a replacement worker, or any process the user
# forks) owns none of these executors, and must not wait for their manager threads at its exit.
os.register_at_fork(after_in_child=_running.clear)


def _busy() -> bool:
    """Whether some executor of this process has a task not finished."""
    return any(manager.scheduler.jobs for manager in list(_running))


def _finish_at_exit() -> None:
    """At the interpreter's exit, wait for every executor's work, as ``ProcessPoolExecutor`` does.

    With or without a ``with`` block, Ctrl-C takes the same graceful path
    as in ``Executor.__exit__`` (see ``_interrupt``): if the script died of
    a ``KeyboardInterrupt`` (its traceback already printed), or one arrives
    while this waits, every task is aborted and waited for; one more
    Ctrl-C terminates the workers. Every task ends in a stored final state.
    """
    died_of_ctrl_c = isinstance(getattr(sys, "last_exc", None) or getattr(sys, "last_value", None), KeyboardInterrupt)
    # (or of SIGTERM or SIGHUP, raised as one)
    for manager in list(_running):
        scheduler = manager.scheduler

        def wait(scheduler: Scheduler = scheduler) -> None:
            scheduler.shutdown(wait=True, cancel_futures=False)

        try:
            if not died_of_ctrl_c:
                wait()
                continue
        except KeyboardInterrupt:
            pass
        release_leaked(manager.open_futures())
        release_making()
        stop_on_interrupt(scheduler.abort_all, wait, manager.terminate)
    if died_of_ctrl_c:
        keep_exiting_as_interrupted()


if hasattr(threading, "_register_atexit"):  # run before the interpreter joins threads, as CPython's own pools do
    threading._register_atexit(_finish_at_exit)
else:  # pragma: no cover
    import atexit

    atexit.register(_finish_at_exit)


# Public as ``localabort.<name>``: reprs, pickles and the docs name the package, not this module.
# Doctest looks for examples in the module an object's ``__module__`` names: ``__test__`` points it here.
__test__ = {public.__name__: public for public in (Executor,)}
for _public in __test__.values():
    _public.__module__ = "localabort"
del _public
