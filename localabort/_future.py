"""Handles on tasks: ``AbortableFuture`` (the producer's) and ``AbortableAsyncResult`` (anyone's).

Both speak one API (``id``, ``state``, ``abort()``, ``get()``, ``progress``...). A future learns its state from the
executor that made it, through the small ``Controller`` protocol below, so
this module knows nothing of processes. An ``AbortableAsyncResult`` reads
the store on every call, so it is fresh in any process.

A finished task's outcome is read back with ``_outcome.load_outcome``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Generator, List, Optional, Protocol, Tuple

from ._capture import log_text
from ._outcome import load_outcome
from ._states import FAILURE, PENDING, READY_STATES, SUCCESS, Progress, usage

if TYPE_CHECKING:
    from ._record import TaskRecord
    from ._store import StoreSpec

__all__ = ["AbortableAsyncResult", "AbortableFuture", "release_making"]


def check_terminate_after(terminate_after: Optional[float]) -> None:
    """Refuse an ``abort(terminate_after=...)`` that is not ``None`` or a number of seconds >= 0."""
    if terminate_after is not None and not terminate_after >= 0:
        raise ValueError(f"terminate_after must be a number of seconds >= 0 or None, not {terminate_after!r}")


class Controller(Protocol):
    """What a future asks of the executor that made it."""

    def _abort(self, future: AbortableFuture, terminate_after: Optional[float] = None) -> bool: ...

    def _cancel(self, future: AbortableFuture) -> bool: ...


# ``concurrent.futures.Future``'s own states (not a task's): its methods and CPython's ``wait()`` read them.
_PENDING, _RUNNING, _FINISHED = "PENDING", "RUNNING", "FINISHED"
_OVER = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED})
#: Makes each future's condition, once, and settles a future that has none: one lock for every future.
#: Reentrant, and nothing is allocated under it: a garbage collection its holder sets off may run a finalizer
#: that cancels a future of the same thread (an abandoned ``map`` iterator does).
_MAKING = threading.RLock()


def release_making() -> None:
    """Let go of ``_MAKING`` if this thread still holds it: a Ctrl-C on Python 3.9 may land between its
    acquire and its ``with`` block (bpo-29988), and the manager would wait for it for ever."""
    while _MAKING._is_owned():  # type: ignore[attr-defined]
        _MAKING.release()


class AbortableFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """The future ``Executor.submit`` returns: a ``concurrent.futures.Future`` you can abort.

    ``abort()`` asks the running task to stop; the task decides when, at its
    next ``is_aborted()`` checkpoint. ``cancel()`` keeps its standard
    meaning: it withdraws a task that has not started.

    >>> from localabort import Executor
    >>> with Executor(max_workers=1) as ex:
    ...     fut = ex.submit(pow, 2, 10)
    ...     fut.get(timeout=30), fut.state
    (1024, 'SUCCESS')
    """

    def __init__(self, task_id: str, controller: Optional[Controller] = None) -> None:
        # ``Future.__init__``'s fields, but its condition: most futures are settled before any thread waits on
        # one, and a condition is seven objects for the garbage collector to scan while the task is pending
        # (full collections took 59 ms of a 870 ms batch of 20,000 trivial tasks here). It is made when a
        # thread first needs it (``_condition``); until then, the executor settles the future under
        # ``_MAKING`` (``_settled_alone``), so the thread that makes it next finds the state already set.
        # Its lists of waiters and callbacks come with it: ``wait()``, ``as_completed()`` and
        # ``add_done_callback()`` take the condition before they add to them; the rest only read them.
        self._made: Optional[threading.Condition] = None
        self._state = _PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._waiters: Any = ()
        self._done_callbacks: Any = ()
        self._id = task_id
        self._controller = controller
        # ``_task_*``, not ``_state``: ``concurrent.futures.Future`` has a ``_state`` of its own
        # (PENDING, RUNNING, FINISHED...), which it alone writes. The executor sets these.
        self._task_state = PENDING
        self._task_progress: Optional[Progress] = None
        self._task_name = ""
        self._task_key: Optional[str] = None  # for its progress bar's label
        self._abort_requested = False
        self._task_usage: Optional[Tuple[Optional[int], Optional[float], Optional[int]]] = None
        self._task_log: Optional[Tuple[str, int]] = None  # as its worker last sent it

    def __repr__(self) -> str:
        return f"<AbortableFuture {self._id} {self._task_state}>"

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """``Future``'s condition, made on first use, for every method of ``Future`` and ``wait()`` that takes it."""
        made = self._made
        if made is None:
            fresh = threading.Condition()  # made before the lock (see ``_MAKING``); one thread's may go unused
            # Its waiters in a list, not a deque: a deque's first block (64 slots, 760 bytes) is more than a
            # pending task holds. ``threading.Condition`` only appends to, removes from, indexes, sizes and
            # clears it, in every Python localabort supports.
            fresh._waiters = []  # type: ignore[attr-defined]
            lists: Tuple[List[Any], List[Any]] = ([], [])
            with _MAKING:
                made = self._made
                if made is None:  # the lists first: a thread that sees the condition without the lock uses them
                    self._waiters, self._done_callbacks = lists
                    self._made = made = fresh
        return made

    def _settled_alone(self, result: Any, exception: Optional[BaseException]) -> bool:
        """Settle this future without its condition if none was made yet; ``False`` if one was (then use it).

        No condition, no thread waits on it: ``result()``, ``wait()`` and
        ``add_done_callback()`` make it first, under the same lock.
        """
        with _MAKING:
            if self._made is not None:
                return False
            over = self._state in _OVER
            if not over:
                self._result, self._exception = result, exception
                self._state = _FINISHED
        if over:
            raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
        return True

    def set_result(self, result: Any) -> None:
        if not self._settled_alone(result, None):
            super().set_result(result)

    def set_exception(self, exception: Optional[BaseException]) -> None:
        if not self._settled_alone(None, exception):
            super().set_exception(exception)

    def set_running_or_notify_cancel(self) -> bool:
        with _MAKING:
            if self._made is None and self._state == _PENDING:
                self._state = _RUNNING
                return True
        return super().set_running_or_notify_cancel()

    # Reads of one attribute, which the condition would not make any truer (``Future`` takes it for them).
    def done(self) -> bool:
        return self._state in _OVER

    def running(self) -> bool:
        return self._state == _RUNNING

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state == _FINISHED and self._exception is None:  # settled: ``_result`` was set before
            return self._result
        try:
            return super().result(timeout)
        finally:
            del self  # as ``Future.result``: the traceback of what it raises must not hold this future

    @property
    def id(self) -> str:
        """The task's id, under which the store and any other process know it."""
        return self._id

    @property
    def state(self) -> str:
        """``PENDING``, ``RECEIVED`` (claimed for a worker), ``STARTED``, then ``SUCCESS``, ``FAILURE``, ``ABORTED``."""
        return self._task_state

    status = state

    @property
    def progress(self) -> Optional[Progress]:
        """The task's last reported ``(done, total)``, or ``None``."""
        return self._task_progress

    @property
    def logs(self) -> str:
        """What the task printed and logged: the last ``log_limit`` bytes, as its worker last sent them.

        While it runs, its worker sends them every half second, if they
        changed; once it ended, they are whole. ``""``: nothing yet.

        >>> from localabort import Executor
        >>> with Executor(max_workers=1) as ex:
        ...     fut = ex.submit(print, "hello")
        ...     fut.result() is None
        True
        >>> fut.logs
        'hello\\n'
        """
        return log_text(self._task_log)

    @property
    def usage(self) -> Optional[Dict[str, Any]]:
        """What the task used, once it ran to its end: ``worker_pid``, ``cpu_seconds``, ``peak_rss`` (bytes).

        ``None`` before, and for a task that never ran or whose worker died.

        >>> from localabort import Executor
        >>> with Executor(max_workers=1) as ex:
        ...     fut = ex.submit(sum, range(10**6))
        ...     sorted(fut.result() and fut.usage)
        ['cpu_seconds', 'peak_rss', 'worker_pid']
        """
        return None if self._task_usage is None else usage(*self._task_usage)

    def abort(self, *, terminate_after: Optional[float] = None) -> bool:
        """Ask the task to abort; ``True`` if recorded, ``False`` if it had already finished.

        Args:
            terminate_after: ``None`` (the default) only asks: the task stops
                at its next ``is_aborted()`` check (unless the executor or
                ``apply_async`` gave the task a ``terminate_after`` of its
                own: then that one applies). A number of seconds also
                kills the task's worker process if the task is still running
                that long from now (``0``: at once), for a task that never
                checks (Celery's ``revoke(terminate=True)``). The task then
                ends ABORTED with a ``TaskAborted`` that says it was
                terminated; a new worker takes the old one's place and the
                other tasks go on. Asked again, the earlier time holds.

        >>> import time
        >>> from localabort import Executor
        >>> with Executor(max_workers=1) as ex:
        ...     fut = ex.submit(time.sleep, 60)   # never checks
        ...     while fut.state != "STARTED":
        ...         time.sleep(0.01)
        ...     fut.abort(terminate_after=0.1)
        ...     fut.exception(timeout=30)
        True
        TaskAborted('task ... terminated: still running when the terminate_after of 0.1s its abort gave it ran out')
        """
        check_terminate_after(terminate_after)
        return self._controller._abort(self, terminate_after) if self._controller is not None else False

    def is_aborted(self) -> bool:
        """Whether an abort was requested for this task (by this process or through the store)."""
        return self._abort_requested

    def cancel(self) -> bool:
        """Withdraw the task if it has not started (state ABORTED); else return ``False``."""
        if self._controller is None:
            return super().cancel()
        return self._controller._cancel(self)

    def ready(self) -> bool:
        """Whether the task has finished, whatever its outcome."""
        return self.done()

    def successful(self) -> bool:
        """Whether the task finished with ``SUCCESS``."""
        return self._task_state == SUCCESS

    def failed(self) -> bool:
        """Whether the task finished with ``FAILURE``."""
        return self._task_state == FAILURE

    def get(self, timeout: Optional[float] = None) -> Any:
        """``result(timeout)``, by its Celery name."""
        return self.result(timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future``: the result, or its exception raised, without blocking the event loop.

        If the awaiting asyncio task is cancelled first, the task is aborted
        (``abort()``: it stops at its next ``is_aborted()``, or never starts)
        and the cancellation goes on as usual.

        >>> import asyncio
        >>> from localabort import Executor
        >>> async def main():
        ...     async with Executor(max_workers=1) as ex:
        ...         return await ex.submit(pow, 2, 10)
        >>> asyncio.run(main())
        1024
        """
        from ._aio import wait_future

        return wait_future(self).__await__()


class AbortableAsyncResult:
    """A handle on one task by id, from any process that can open its store.

    Every call reads the store, so state and progress are fresh even when
    the executor runs in another OS process.

    >>> import os, tempfile
    >>> store = os.path.join(tempfile.mkdtemp(), "batch.sqlite")
    >>> from localabort import Executor
    >>> with Executor(max_workers=1, store=store) as ex:
    ...     task_id = ex.submit(sum, [1, 2, 3]).id
    >>> res = AbortableAsyncResult(task_id, store=store)
    >>> res.state, res.get(timeout=10), res.abort()
    ('SUCCESS', 6, False)
    """

    def __init__(self, task_id: str, store: StoreSpec) -> None:
        from ._store import Store  # here: ``import localabort`` loads no store

        self.id = task_id
        self.store = Store.open(store)

    def __repr__(self) -> str:
        return f"<AbortableAsyncResult {self.id}>"

    @property
    def state(self) -> str:
        """The stored state; an id no executor handed out raises ``UnknownTask`` (not PENDING, as in Celery)."""
        return self.store.lookup(self.id).state

    status = state

    @property
    def progress(self) -> Optional[Progress]:
        """The task's last stored ``(done, total)``, or ``None``."""
        return self.store.lookup(self.id).progress

    def abort(self, *, terminate_after: Optional[float] = None) -> bool:
        """Ask the task to abort; ``True`` if recorded, ``False`` if finished; ``UnknownTask`` if unknown.

        An abort asked before the task's row is written (moments after
        ``submit()``) is kept, and the task never runs. ``terminate_after``
        is ``AbortableFuture.abort``'s: its executor kills the worker of a
        task still running that many seconds from now.
        """
        check_terminate_after(terminate_after)
        return self.store.request_abort(self.id, terminate_after) is not None

    def is_aborted(self) -> bool:
        """Whether an abort was ever requested for this task."""
        return self.store.lookup(self.id).abort_requested

    @property
    def result(self) -> Any:
        """Celery's ``result``: the return value once SUCCESS, the exception once it failed or aborted, else ``None``.

        Unlike ``get()``, it never waits and never raises the task's error.
        """
        record = self.store.lookup(self.id)
        if record.state not in READY_STATES:
            return None
        value, exc = load_outcome(record.state, record.result, record.traceback)
        return value if exc is None else exc

    info = result

    @property
    def traceback(self) -> Optional[str]:
        """The traceback text of a task that raised, as the worker printed it, or ``None``."""
        return self.store.lookup(self.id).traceback

    @property
    def logs(self) -> str:
        """What the task printed and logged, as ``AbortableFuture.logs`` gives it, from the store."""
        self.store.lookup(self.id)  # an unknown id raises
        return log_text(self.store.log(self.id))

    @property
    def usage(self) -> Optional[Dict[str, Any]]:
        """What the task used, as ``AbortableFuture.usage`` gives it, from the store."""
        return self.store.lookup(self.id).usage

    def ready(self) -> bool:
        """Whether the task has finished, whatever its outcome."""
        return self.state in READY_STATES

    def successful(self) -> bool:
        """Whether the task finished with ``SUCCESS``."""
        return self.state == SUCCESS

    def failed(self) -> bool:
        """Whether the task finished with ``FAILURE``."""
        return self.state == FAILURE

    def get(self, timeout: Optional[float] = None, interval: float = 0.05) -> Any:
        """Wait for the task; return its value or raise as ``AbortableFuture.result`` does.

        Polls the store every ``interval`` seconds (starting faster); raises
        ``TimeoutError`` after ``timeout`` seconds, and ``UnknownTask`` for an
        id no executor handed out. If the task's executor dies on this host
        meanwhile, the task ends FAILURE (``WorkerLost``) within about 6 s
        (5 s of silence, then the next look), and so does this call.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.store.lookup(self.id)  # an unknown id raises, instead of waiting for ever
        watch = _Watch(self, interval)
        while True:
            record = watch.look()
            if record is not None:
                return watch.settled(record)
            if deadline is not None and time.monotonic() >= deadline:
                raise concurrent.futures.TimeoutError(f"task {self.id} not finished after {timeout}s")
            pause = watch.pause()
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))

    def __await__(self) -> Generator[Any, None, Any]:
        """``await`` it: ``get()`` without blocking the event loop (the store is read in a thread).

        An id no executor handed out raises ``UnknownTask``; a cancelled
        await asks the task to abort, as ``abort()`` does.

        >>> import asyncio, os, tempfile
        >>> store = os.path.join(tempfile.mkdtemp(), "batch.sqlite")
        >>> from localabort import Executor
        >>> with Executor(max_workers=1, store=store) as ex:
        ...     task_id = ex.submit(sum, [1, 2, 3]).id
        >>> async def main():
        ...     return await AbortableAsyncResult(task_id, store=store)
        >>> asyncio.run(main())
        6
        """
        from ._aio import POLL_INTERVAL, wait_result

        return wait_result(self, _Watch(self, POLL_INTERVAL)).__await__()


class _Watch:
    """A wait for one task's final state: each look reads the store (blocking), each pause is longer, up to a bound.

    ``AbortableAsyncResult.get`` sleeps between looks; ``await`` makes them
    on the loop's executor (``_aio.wait_result``).
    """

    def __init__(self, result: AbortableAsyncResult, interval: float) -> None:
        from ._store import RECOVER_EVERY

        self._result, self._interval, self._every = result, interval, RECOVER_EVERY
        self._pause = min(0.005, interval)
        self._recover_at = time.monotonic() + RECOVER_EVERY

    def look(self) -> Optional[TaskRecord]:
        """The task's record once it is final, else ``None``."""
        store = self._result.store
        if time.monotonic() >= self._recover_at:  # its executor may have died since: its tasks then end FAILURE
            store.recover_dead_executors()
            self._recover_at = time.monotonic() + self._every
        record = store.get(self._result.id)
        return record if record is not None and record.state in READY_STATES else None

    def pause(self) -> float:
        """Seconds to wait before the next look: from 5 ms, doubling up to the interval."""
        pause, self._pause = self._pause, min(self._pause * 2, self._interval)
        return pause

    @staticmethod
    def settled(record: TaskRecord) -> Any:
        """A final record's value, or its exception raised."""
        value, exc = load_outcome(record.state, record.result, record.traceback)
        if exc is not None:
            raise exc
        return value


# Public as ``localabort.<name>``: reprs, pickles and the docs name the package, not this module.
# Doctest looks for examples in the module an object's ``__module__`` names: ``__test__`` points it here.
__test__ = {public.__name__: public for public in (AbortableFuture, AbortableAsyncResult)}
for _public in __test__.values():
    _public.__module__ = "localabort"
del _public
