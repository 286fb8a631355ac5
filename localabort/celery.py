"""The same tasks on Celery workers, with an abort that is never lost.

``register(app, TaskClass)`` makes a Celery task that runs ``TaskClass``
on any worker of ``app``. Its state lives where an ``Executor``'s does: in
a localabort store, by default the database of the app's ``db+`` result
backend (in localabort's own tables), so producers, workers, the
``localabort`` command and ``AbortableAsyncResult`` all see one truth.

Why not keep the abort in Celery's result backend, as
``celery.contrib.abortable`` does? There it is the task's *state*, and
the task's own return overwrites it with SUCCESS. Here the request is a
column of its own, and every state write is conditional (a final state
stays final), so no later write can undo an abort.

- ``apply_async``/``delay`` record the task PENDING, then send it, and
  return an ``AbortableAsyncResult``.
- A worker *starts* the task in the store before it runs it: one conditional update,
  PENDING to STARTED, only if no abort was requested. ``abort()`` on a task
  not yet started ends it ABORTED at once, with the opposite update; the
  database lets exactly one of the two win, so a task aborted while queued
  never runs, and one that has started sees the abort at its next check.
- Inside the worker, ``is_aborted()`` reads a flag of the process's watch
  (``_watch``), which the checks themselves renew, for all the tasks the
  process runs: on PostgreSQL when a notification (``LISTEN``/``NOTIFY``)
  says an abort came, on SQLite every ``POLL_INTERVAL`` s; a check in
  between costs a clock read. ``soft_time_limit`` asks
  for an abort, as under ``Executor``; ``time_limit`` is Celery's own, and
  the store says ``TimeLimitExceeded``.
- A worker process that dies mid-task (the OOM killer, a SIGKILL) ends its
  task FAILURE with ``WorkerLost``: the worker's main process stores it
  when Celery reports the loss. A whole worker that dies is found by its
  silence (each process renews its registration every ``HEARTBEAT`` s),
  and another process that opens or watches the store ends its tasks the
  same way (docs/faults.md gives the times). With ``acks_late`` and
  ``reject_on_worker_lost``, Celery delivers the task again instead, and
  the new delivery runs it (unless an abort was asked meanwhile).
- ``register(..., abort_on_warm_shutdown=True)``: a warm shutdown of the
  worker (SIGTERM) asks its running tasks of that kind to abort, so they
  stop at their next check and are recorded ABORTED, instead of running
  to the end while the shutdown waits.
- Retries keep the task class's settings (``autoretry_for``,
  ``max_retries``, backoff, ``self.retry()``), decided in the worker as
  under ``Executor``: an attempt that asks for another is stored RETRY,
  then sent again with Celery's own ``retry()``. A task aborted while it
  waits is ABORTED at once (the same update as a queued one), and its
  next delivery finds it so and never runs.
- The task's outcome follows the states table (docs/states.md) and is written to the store;
  Celery's backend gets the value (SUCCESS), the exception (FAILURE), or
  the custom state ABORTED, after which the task raises ``Ignore`` so
  Celery writes nothing over it.

Example (a runnable one is ``examples/celery_crunch.py``)::

    app = Celery("proj", broker="sqla+sqlite:///broker.sqlite", backend="db+sqlite:///results.sqlite")
    crunch = register(app, Crunch)
    res = crunch.delay(10_000)
    res.abort()
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from celery import Task, signals
from celery.exceptions import Ignore, WorkerLostError
from celery.exceptions import TimeLimitExceeded as CeleryTimeLimitExceeded

from ._capture import DEFAULT_LOG_LIMIT, Capture, Usage
from ._errors import MemoryLimitExceeded, TimeLimitExceeded, WorkerLost
from ._future import AbortableAsyncResult, check_terminate_after
from ._memory import TaskMemory, parse_size, passed
from ._outcome import by_memory_cap, by_soft_limit, describe, dump, pickle_outcome, terminated
from ._procs import asker
from ._sql import CELERY
from ._states import ABORTED, FAILURE, PENDING, RETRY, STARTED, SUCCESS, Progress, new_id, task_row
from ._store import Store
from ._task import AbortableTask, Binding, run, task_name
from ._text import call_repr
from ._watch import POLL_INTERVAL, Watch, Watched, watch

__all__ = ["POLL_INTERVAL", "CeleryResult", "LocalabortCeleryTask", "register"]


def register(app: Any, task_class: Type[AbortableTask], store: Optional[str] = None, **celery_options: Any) -> Any:
    """Make a Celery task of ``app`` that runs ``task_class``; return it.

    ``store`` is the SQLAlchemy URL (or SQLite path) of the localabort
    store that producers and workers share; by default the app's
    ``db+...`` result backend, so the task states live beside Celery's
    results. ``celery_options`` go to ``app.task`` (``queue``,
    ``time_limit``, ``acks_late``...); ``soft_time_limit`` asks for an
    abort, as under ``Executor``, instead of raising Celery's exception;
    ``abort_on_warm_shutdown=True`` asks running tasks to abort when their
    worker begins a warm shutdown; ``log_limit`` is the bytes of each
    task's log the store keeps, as ``Executor``'s (what it prints and logs
    still reaches the worker's own output). ``soft_memory_limit`` asks the
    task to abort past it, and ``memory_limit`` kills its worker process
    past it (stored FAILURE, ``MemoryLimitExceeded``; Celery starts another),
    as under ``Executor``; both default to the class's.

    >>> from celery import Celery
    >>> from localabort import AbortableTask
    >>> class Double(AbortableTask):
    ...     def run(self, x):
    ...         return 2 * x
    >>> app = Celery("doc", broker="memory://", backend="db+sqlite:///:memory:")
    >>> register(app, Double).name
    'localabort.celery.Double'
    """
    soft_time_limit = celery_options.pop("soft_time_limit", getattr(task_class, "soft_time_limit", None))
    memory = tuple(parse_size(celery_options.pop(option, getattr(task_class, option, None)), option)
                   for option in ("soft_memory_limit", "memory_limit"))  # fmt: skip
    abort_on_warm_shutdown = bool(celery_options.pop("abort_on_warm_shutdown", False))
    log_limit = celery_options.pop("log_limit", DEFAULT_LOG_LIMIT)
    # The task class's retry settings govern (in the worker, as under Executor); Celery only sends the retries.
    options: Dict[str, Any] = {"name": task_name(task_class), "max_retries": None}
    if getattr(task_class, "time_limit", None) is not None:
        options["time_limit"] = task_class.time_limit
    options.update(celery_options)

    def run(self: LocalabortCeleryTask, *args: Any, **kwargs: Any) -> Any:
        return self.run_localabort(args, kwargs)

    return app.task(
        run, bind=True, base=LocalabortCeleryTask, localabort_class=task_class, localabort_store=store,
        localabort_soft_time_limit=soft_time_limit, localabort_abort_on_warm_shutdown=abort_on_warm_shutdown,
        localabort_log_limit=log_limit, localabort_memory=memory, **options,
    )  # fmt: skip


class CeleryResult(AbortableAsyncResult):
    """The result of a registered task: ``AbortableAsyncResult``, whose ``abort()`` also ends a task not yet started."""

    def abort(self, *, terminate_after: Optional[float] = None) -> bool:
        """Ask the task to abort. Not yet started by a worker, it ends ABORTED now and never runs.

        With ``terminate_after``, the worker process running the task kills
        itself if the task still runs that many seconds from now (its watch
        learns the deadline with the abort); the store says ABORTED (terminated),
        and Celery's own backend ``WorkerLostError``.
        """
        check_terminate_after(terminate_after)
        requested = self.store.request_abort(self.id, terminate_after) is not None
        return self.store.abort_unstarted(self.id, CELERY) or requested


class LocalabortCeleryTask(Task):  # type: ignore[misc]
    """The base of the Celery tasks ``register`` makes."""

    localabort_class: Type[AbortableTask]
    localabort_store: Optional[str] = None
    localabort_soft_time_limit: Optional[float] = None
    localabort_abort_on_warm_shutdown: bool = False
    localabort_log_limit: int = DEFAULT_LOG_LIMIT
    localabort_memory: Tuple[Optional[int], Optional[int]] = (None, None)  # soft and hard memory limits, bytes

    @property
    def store(self) -> Store:
        """The localabort store of this task's states."""
        spec = self.localabort_store or _backend_store(self.app)
        return Store.open(spec, create=True)  # producers and workers make it, as an Executor does

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: Optional[str] = None, **options: Any) -> Any:
        """Record the task PENDING, send it as Celery does, and return its ``CeleryResult``.

        A retry (Celery's ``retry()`` sends the task again, with ``retries``)
        keeps its row, which says RETRY.
        """
        task_id, store = task_id or new_id(), self.store
        if not options.get("retries"):
            row = task_row(
                task_id,
                executor_id=CELERY,
                name=self.name,
                state=PENDING,
                submitted_at=time.time(),
                args_repr=call_repr(  # Celery's own argsrepr and kwargsrepr, if given, as its monitors show them
                    tuple(args or ()), dict(kwargs or {}), options.get("argsrepr"), options.get("kwargsrepr")
                ),
            )
            store.write([row])
        super().apply_async(args, kwargs, task_id=task_id, **options)
        return CeleryResult(task_id, store=store)

    def run_localabort(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """The worker's side: start the task in the store, run it, store its outcome, and tell Celery."""
        task_id, store = self.request.id, self.store
        retries = self.request.retries or 0
        watching = watch(store)
        # A task Celery delivers again if its process dies stays no process's own, so recovery leaves it be.
        again = self.acks_late and self.reject_on_worker_lost
        row = task_row(task_id, executor_id=CELERY if again else watching.executor_id, name=self.name, state=STARTED,
                       started_at=time.time(), retries=retries)  # fmt: skip
        began = store.start(row)
        if began == ABORTED:
            self._report_aborted(None)
        if began != STARTED:  # finished already: a copy delivered again
            raise Ignore()
        retries = row["retries"]  # one more if Celery delivered it again after its process was lost
        task = self.localabort_class()

        def report(done: float, total: Optional[float]) -> None:
            store.write([dict(row, progress_done=done, progress_total=total)])

        watched = watching.add(task_id, lambda: _terminate(store, row, lambda: task._last_progress))
        probe = _Probe(store, watching, watched, self.localabort_soft_time_limit)
        capture, usage = _capture()
        capture.begin(task_id, self.localabort_log_limit, (store, task_id))
        usage.begin()
        soft_memory, hard_memory = self.localabort_memory
        memory = _task_memory()
        memory.begin((probe, row, task, self.localabort_memory), soft_memory, hard_memory)
        try:
            outcome, progress = run(
                task, args, kwargs, Binding(task_id, probe, report, store.is_abort_requested, retries)
            )
        finally:
            memory.end()
            watching.remove(watched)
            pid, cpu, peak = usage.end()
            with _Captures.lock:  # a log the thread took before the end is stored before the final row
                log, _ = capture.end()
            row.update(worker_pid=pid, cpu_seconds=cpu, peak_rss=peak)
            if log is not None:
                row["log"] = log
        if probe.soft_limited:
            outcome = by_soft_limit(outcome, f"{self.name} [{task_id}]", self.localabort_soft_time_limit,
                                    probe.soft_memory)  # fmt: skip
        outcome = by_memory_cap(outcome, f"{self.name} [{task_id}]", hard_memory)
        (state, value, exc, tb, countdown), blob = pickle_outcome(outcome, self.name)
        done, total = progress or (None, None)
        if state == RETRY:  # stored RETRY, then sent again by Celery's own retry, which raises
            wait = countdown or 0.0
            store.write([dict(row, executor_id=CELERY, state=RETRY, retries=retries + 1, eta=time.time() + wait,
                              progress_done=done, progress_total=total, result=blob, traceback=tb,
                              error=describe(exc))])  # fmt: skip
            Task.retry(self, exc=exc, countdown=wait, max_retries=None)
        store.write([dict(row, state=state, finished_at=time.time(), progress_done=done, progress_total=total,
                          result=blob, traceback=tb, error=describe(exc))])  # fmt: skip
        if state == SUCCESS:
            return value
        if state == ABORTED:
            self._report_aborted(value)
        assert exc is not None
        raise exc

    def _report_aborted(self, partial: Any) -> None:
        """Give Celery's backend the state ABORTED, and keep Celery from writing over it."""
        self.update_state(state=ABORTED, meta={"partial_result": repr(partial)})
        raise Ignore()


class _Captures:
    """This process's ``Capture``, ``Usage`` and ``TaskMemory``; a thread stores its running task's log."""

    capture: Optional[Capture] = None
    usage: Optional[Usage] = None
    memory: Optional[TaskMemory] = None
    memory_pid = 0
    pid = 0
    lock = threading.Lock()  # held from taking a log to storing it


def _capture() -> Tuple[Capture, Usage]:
    """The capture and usage of this Celery process (a prefork child each: made in it, on its first task)."""
    if _Captures.pid != os.getpid():
        _Captures.capture, _Captures.pid = Capture(forward=False), os.getpid()  # Celery's logging is its own
        _Captures.usage, _Captures.lock = Usage(), threading.Lock()
        follow = _Captures.capture.send_changes
        threading.Thread(target=follow, args=(_Captures.lock, _store_log), name="localabort-log", daemon=True).start()
    assert _Captures.capture is not None and _Captures.usage is not None
    return _Captures.capture, _Captures.usage


def _task_memory() -> TaskMemory:
    """This Celery process's memory limits (a prefork child each: made in it, on its first task)."""
    if _Captures.memory_pid != os.getpid():
        _Captures.memory, _Captures.memory_pid = TaskMemory(_over_memory), os.getpid()
    assert _Captures.memory is not None
    return _Captures.memory


def _over_memory(key: Any, used: int, hard: bool) -> None:
    """A task passed a memory limit: ask it to abort (soft), or store it FAILURE and kill this process (hard)."""
    probe, row, task, (soft_limit, hard_limit) = key
    if hard:
        exc = MemoryLimitExceeded(f"{row['name']} [{row['id']}] {passed(used, hard_limit, soft=False)}")
        _terminate(probe._store, row, lambda: task._last_progress, exc)
    else:
        probe.over_memory(passed(used, soft_limit, soft=True))


def _store_log(tag: Any, log: Optional[Tuple[str, int]], records: List[Dict[str, Any]]) -> bool:
    """Store the running task's log so far (``localabort logs --follow``); records are Celery's own to handle."""
    if log is not None and tag is not None:
        store, task_id = tag
        try:
            store.write_log(task_id, log)
        except Exception:  # the store is away a moment: its final row carries the whole log
            pass
    return True


def _terminate(
    store: Store, row: Dict[str, Any], progress: Callable[[], Optional[Progress]],
    exc: Optional[BaseException] = None,
) -> None:  # fmt: skip
    """The task of ``row`` ran past its ``terminate_after``: store it ABORTED (terminated), then kill this process.

    Given ``exc`` (its ``memory_limit``), it is stored FAILURE with it instead.
    A final state stays final, so a task that just finished keeps its own.
    Celery then reports the process lost, and starts another.
    """
    state, exc = (ABORTED, terminated(row["id"], -1.0)) if exc is None else (FAILURE, exc)
    last, total = progress() or (None, None)
    try:
        store.write([dict(row, state=state, finished_at=time.time(), progress_done=last, progress_total=total,
                          result=dump(exc), error=describe(exc))])  # fmt: skip
    finally:  # killed even if the store is away: the worker's main process then stores WorkerLost
        os.kill(os.getpid(), signal.SIGKILL)


def _on_task_failure(sender: Any = None, task_id: Optional[str] = None, exception: Any = None, **_: Any) -> None:
    """Celery's ``task_failure``: store the end of a task whose process died, or was killed at its ``time_limit``.

    It runs in the worker's main process, for the task's own process never
    stored its end (a final state stays final, so a terminated one keeps its ABORTED).
    """
    if not isinstance(sender, LocalabortCeleryTask) or task_id is None:
        return
    if isinstance(exception, WorkerLostError):
        lost: BaseException = WorkerLost(f"{sender.name} [{task_id}]: its worker process died ({exception})")
    elif isinstance(exception, CeleryTimeLimitExceeded):
        lost = TimeLimitExceeded(f"{sender.name} [{task_id}] ran past its time_limit ({exception})")
    else:  # the task's own exception: its process stored it
        return
    sender.store.end_lost(task_id, lost)


def _on_worker_shutting_down(sig: Any = None, how: Any = None, **_: Any) -> None:
    """Celery's ``worker_shutting_down``, in the main process: a warm shutdown asks the tasks that want it to abort."""
    if how != "Warm":
        return
    from celery.worker import state

    for request in list(state.active_requests):
        task = request.task
        if isinstance(task, LocalabortCeleryTask) and task.localabort_abort_on_warm_shutdown:
            task.store.request_abort(request.id, by=asker(f"warm shutdown of {request.hostname} ({sig})"))


def _on_worker_process_init(**_: Any) -> None:
    """Celery's ``worker_process_init``: each worker process starts its watch of every store its tasks use.

    So the process is registered and renews its registration from its
    start, busy or not, and helps recover the tasks of dead ones.
    """
    from celery import current_app

    specs = set()
    for task in list(current_app.tasks.values()):
        if isinstance(task, LocalabortCeleryTask):
            try:
                specs.add(task.localabort_store or _backend_store(task.app))
            except ValueError:  # no database backend: the task says so when it is used, as before
                pass
    for spec in specs:
        watch(Store.open(spec, create=True))


signals.task_failure.connect(_on_task_failure, weak=False)
signals.worker_process_init.connect(_on_worker_process_init, weak=False)
signals.worker_shutting_down.connect(_on_worker_shutting_down, weak=False)


def _backend_store(app: Any) -> str:
    backend = str(app.conf.result_backend or "")
    if not backend.startswith("db+"):
        raise ValueError(
            f"localabort.celery: the app's result backend {backend.split('://')[0] or 'None'!r} is not a database; "
            "pass register(app, Task, store=...) a database URL or SQLite path that producers and workers share"
        )
    return backend[len("db+") :]


class _Probe:
    """``is_aborted()`` on a worker: the flag the process's watch sets, read anew when due, and ``soft_time_limit``.

    One clock read a check, unless a read of the store is due (``Watch.look``).
    """

    __slots__ = ("_soft_deadline", "_soft_limit", "_store", "_watch", "_watched", "soft_limited", "soft_memory")

    def __init__(self, store: Store, watching: Watch, watched: Watched, soft_time_limit: Optional[float]) -> None:
        self._store, self._watch, self._watched = store, watching, watched
        self.soft_limited = False
        self.soft_memory: Optional[str] = None  # its soft memory limit asked: the words that say so
        self._soft_limit = soft_time_limit
        self._soft_deadline = float("inf") if soft_time_limit is None else time.monotonic() + soft_time_limit

    def __call__(self) -> bool:
        if self._watched.aborted:
            return True
        now = time.monotonic()
        if now >= self._watch.next_look:
            self._watch.look(now)
            if self._watched.aborted:
                return True
        if now < self._soft_deadline:
            return False
        self._soft_deadline = float("inf")
        self._watched.aborted = self.soft_limited = True  # first: the task stops even if the store is away
        self._store.request_abort(self._watched.task_id, by=f"its soft_time_limit of {self._soft_limit}s")
        return True

    def over_memory(self, words: str) -> None:
        """The task's memory passed its soft limit (``words`` say how): it sees an abort at its next check."""
        if self._watched.aborted:
            return
        self.soft_memory = words
        self._watched.aborted = self.soft_limited = True
        self._store.request_abort(self._watched.task_id, by=words)
