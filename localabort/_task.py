"""The task API: ``AbortableTask``, the module-level helpers, and the outcome rules.

A task knows nothing of processes or stores. Whoever runs it (the worker in
a child process, ``localabort.testing.run_inline`` in this one, a Celery
worker) *binds* it to three callables:

* ``probe() -> bool``: has an abort been requested for this task? It is
  called on every ``is_aborted()``, so the runner makes it cheap: a
  shared-memory word in an executor's child (``_words``), a counter in
  ``run_inline``, a throttled store read on a Celery worker;
* ``report(done, total)``: forward progress; the task throttles the calls;
* ``lookup(task_id) -> bool``: is another task aborted (``task_id=``)?

Each runner says so in a ``Binding`` and calls ``run``, which builds the
task, binds it, runs it and reads its last progress; its ``_guarded``
applies the outcome table (docs/states.md) in one place, so every runner
ends a task the same way. What a ``RunOutcome`` becomes on its way to the
store is ``_outcome``'s.
"""

from __future__ import annotations

import os
import random
import time
import traceback
import types
from typing import Any, Callable, ClassVar, Dict, List, NamedTuple, NoReturn, Optional, Protocol, Tuple, Type, Union

from ._byvalue import where
from ._errors import MaxRetriesExceededError, Retry, TaskAborted
from ._outcome import RunOutcome, describe
from ._states import ABORTED, FAILURE, RETRY, SUCCESS, Progress

__all__ = [
    "RETRY_OPTIONS", "AbortableTask", "Binding", "Submitter", "checkpoint", "current_task", "entered", "exited",
    "is_aborted", "run",
]  # fmt: skip

#: The retry settings of a task class that ``apply_async`` may override for one call, as Celery names them.
RETRY_OPTIONS = (
    "autoretry_for", "max_retries", "default_retry_delay", "retry_backoff", "retry_backoff_max", "retry_jitter",
)  # fmt: skip

#: Seconds between two progress reports that a task forwards to its runner.
PROGRESS_INTERVAL = 0.1


class Submitter(Protocol):
    """What ``delay`` and ``apply_async`` may call on the executor whose ``with`` block they run in."""

    def apply_async(
        self, task: Any, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, **options: Any
    ) -> Any: ...


_current: Optional[AbortableTask] = None
#: The submitters whose ``with`` block is active, innermost last (see ``delay``).
_active: List[Submitter] = []


def entered(submitter: Submitter) -> None:
    """A ``with`` block of ``submitter`` began: ``delay()`` submits to it until it ends."""
    _active.append(submitter)


def exited(submitter: Submitter) -> None:
    """The ``with`` block of ``submitter`` ended (an inner one may end first, or twice: both are fine)."""
    if submitter in _active:
        _active.remove(submitter)


def _forget_after_fork() -> None:
    """Nothing module-level crosses ``fork()``: a forked child is inside no ``with Executor`` block.

    Left alone, ``delay()`` in a worker forked while such a block was active
    (a replacement worker) would submit to the dead copy of the parent's
    executor instead of raising its clear error. ``_current`` is kept: a
    process a task forks works for that task, and its ``is_aborted()``
    reads the same shared word.
    """
    _active.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _never() -> bool:
    return False


def _ignore(done: float, total: Optional[float]) -> None:
    pass


def _no_lookup(task_id: str) -> bool:
    return False


class Request:
    """What a task knows of the call that runs it, as Celery's ``self.request``.

    >>> Request("4f3c", (1,), {}).id
    '4f3c'
    """

    __slots__ = ("args", "id", "kwargs", "retries")

    def __init__(
        self, id: str, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, retries: int = 0
    ) -> None:
        self.id = id
        self.args = args
        self.kwargs = kwargs or {}
        self.retries = retries  # attempts retried before this one: 0 on the first

    def __repr__(self) -> str:
        return f"Request(id={self.id!r})"


class AbortableTask:
    """Base class of abortable tasks: subclass it and implement ``run``.

    ``run`` checks ``self.is_aborted()`` at its own checkpoints and stops
    cleanly when it returns ``True``; what it returns then becomes the
    ``partial_result`` of the ``TaskAborted`` its future raises.

    Class attributes ``soft_time_limit`` and ``time_limit`` (seconds) bound a
    run: at the soft limit an abort is requested, at the hard limit the
    child is killed. ``soft_memory_limit`` and ``memory_limit`` (bytes, or
    a size such as ``"512MiB"``) do the same for the task's resident
    memory, with the processes it started.

    Retries take Celery's names: an error of a type in ``autoretry_for``,
    or ``raise self.retry(exc=..., countdown=...)``, ends the attempt and
    schedules the next one, at most ``max_retries`` times (``None``: no
    limit), after ``default_retry_delay`` seconds, or an exponential
    backoff (``retry_backoff``: a factor in seconds, or ``True`` for 1;
    capped at ``retry_backoff_max``; with ``retry_jitter``, a random part
    of it). ``self.request.retries`` counts the attempts before this one.
    An abort ends retrying: a task aborted while it waits never runs again.

    >>> class Crunch(AbortableTask):
    ...     def run(self, n):
    ...         done = []
    ...         for i in range(n):
    ...             if self.is_aborted():
    ...                 return done
    ...             done.append(i * i)
    ...             self.progress(i + 1, n)
    ...         return done
    >>> from localabort.testing import run_inline
    >>> run_inline(Crunch, 4).result
    [0, 1, 4, 9]
    >>> run_inline(Crunch, 4, abort_after=3).exception.partial_result
    [0, 1]
    """

    soft_time_limit: ClassVar[Optional[float]] = None
    time_limit: ClassVar[Optional[float]] = None
    soft_memory_limit: ClassVar[Optional[Union[int, str]]] = None
    memory_limit: ClassVar[Optional[Union[int, str]]] = None

    autoretry_for: Tuple[Type[BaseException], ...] = ()
    max_retries: Optional[int] = 3
    default_retry_delay: float = 180.0
    retry_backoff: Union[bool, float] = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True

    task_id: str
    request: Request

    def __init__(self) -> None:
        self._bind("", _never)

    # -- binding (the runner's side) -----------------------------------------

    def _bind(
        self,
        task_id: str,
        probe: Callable[[], bool],
        report: Callable[[float, Optional[float]], None] = _ignore,
        lookup: Callable[[str], bool] = _no_lookup,
        args: Tuple[Any, ...] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        report_every: float = PROGRESS_INTERVAL,
        retries: int = 0,
        options: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.task_id = task_id
        self.request = Request(task_id, args, kwargs, retries)
        for name, value in (options or {}).items():  # apply_async's overrides of the class's retry settings
            setattr(self, name, value)
        self._probe = probe
        self._report = report
        self._lookup = lookup
        self._saw_abort = False
        self._last_progress: Optional[Progress] = None
        self._next_report = 0.0
        self._report_every = report_every

    # -- the task's side ------------------------------------------------------

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The work. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(self, ...)")

    def is_aborted(self, task_id: Optional[str] = None) -> bool:
        """Return ``True`` once an abort was requested for this task.

        Cheap: a memory read, no query, so call it as often as you like.
        ``task_id=`` asks about another task instead (a store read).

        >>> AbortableTask().is_aborted()
        False
        """
        if task_id is not None and task_id != self.task_id:
            return self._lookup(task_id)
        if self._probe():
            self._saw_abort = True
            return True
        return False

    def checkpoint(self) -> None:
        """Raise ``TaskAborted`` if an abort was requested; for deep call stacks.

        >>> AbortableTask().checkpoint()  # not aborted: returns None
        """
        if self._probe():
            self._saw_abort = True
            raise TaskAborted(f"task {self.task_id} aborted at a checkpoint", task_id=self.task_id)

    def progress(self, done: float, total: Optional[float] = None) -> None:
        """Report progress, visible to the producer, the CLI and progress bars.

        Cheap to call on every item: reports are throttled to one every
        ``PROGRESS_INTERVAL`` seconds, and the last one always arrives.

        >>> AbortableTask().progress(3, 10)
        """
        self._last_progress = (done, total)
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + self._report_every
            self._report(done, total)

    def retry(
        self, exc: Optional[BaseException] = None, countdown: Optional[float] = None,
        max_retries: Optional[int] = None,
    ) -> NoReturn:  # fmt: skip
        """End this attempt and ask for another, ``countdown`` seconds from now (default ``default_retry_delay``).

        Raises ``Retry`` (write ``raise self.retry(...)``, as in Celery).
        With no attempt left (``max_retries``, default the class's), it
        raises ``exc`` instead, or ``MaxRetriesExceededError`` without one.

        >>> AbortableTask().retry(exc=ConnectionError("reset"), countdown=5)
        Traceback (most recent call last):
        ...
        localabort.Retry: retry in 5s: ConnectionError: reset
        """
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and self.request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"{task_name(type(self))} [{self.task_id}] retried {self.request.retries} times, its max_retries"
            )
        raise Retry(exc=exc, countdown=self.default_retry_delay if countdown is None else countdown)

    def _backoff(self) -> float:
        """Seconds before the next attempt after an ``autoretry_for`` error (Celery's exponential backoff)."""
        if not self.retry_backoff:
            return float(self.default_retry_delay)
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(float(self.retry_backoff_max), factor * 2**self.request.retries)
        return random.uniform(0, delay) if self.retry_jitter else delay

    # -- submitting (Celery style) --------------------------------------------

    @classmethod
    def delay(cls, *args: Any, **kwargs: Any) -> Any:
        """Submit this task to the innermost active ``with Executor(...)`` block.

        Returns its ``AbortableFuture``. Outside such a block it raises
        ``RuntimeError``.

        >>> AbortableTask.delay()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: AbortableTask.delay() needs an active executor: call it inside `with Executor(...):`, ...
        """
        return _submit_to_active(cls, "delay", args, kwargs, {})

    @classmethod
    def apply_async(cls, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, **options: Any) -> Any:
        """Like ``delay`` with options (``task_id``, ``key``, time limits), as in Celery.

        >>> AbortableTask.apply_async((1,), task_id="t1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: AbortableTask.apply_async() needs an active executor: ...
        """
        return _submit_to_active(cls, "apply_async", args, kwargs, options)


def _submit_to_active(
    cls: type, method: str, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]], options: Dict[str, Any]
) -> Any:
    if not _active:
        raise RuntimeError(
            f"{cls.__name__}.{method}() needs an active executor: call it inside "
            f"`with Executor(...):`, or use executor.submit({cls.__name__}, ...)"
        )
    return _active[-1].apply_async(cls, args, kwargs, **options)


def current_task() -> Optional[AbortableTask]:
    """The ``AbortableTask`` running in this process, or ``None``.

    >>> current_task() is None
    True
    """
    return _current


def is_aborted() -> bool:
    """The current task's ``is_aborted()``; ``False`` outside a task.

    For helpers deep in a call stack that do not hold ``self``.

    >>> is_aborted()
    False
    """
    task = _current
    return task is not None and task.is_aborted()


def checkpoint() -> None:
    """Raise ``TaskAborted`` if the current task was aborted; nothing outside a task.

    >>> checkpoint()
    """
    task = _current
    if task is not None:
        task.checkpoint()


def task_name(task: Any, *, short: bool = False) -> str:
    """The name a task is stored under: its module and qualified name; ``short``: the latter alone.

    >>> from collections import OrderedDict
    >>> task_name(OrderedDict), task_name(OrderedDict, short=True)
    ('collections.OrderedDict', 'OrderedDict')
    """
    qualname = getattr(task, "__qualname__", None) or type(task).__qualname__
    if "<" in qualname:  # a lambda, or defined in a function: where it was defined says which
        at = where(task)
        qualname = qualname if at is None else f"{qualname} ({at})"
    if short:
        return str(qualname)
    module = getattr(task, "__module__", None) or type(task).__module__
    return f"{module}.{qualname}"


class Binding(NamedTuple):
    """What a runner binds a task to: its id, the three callables of the module's docstring, and its attempt."""

    task_id: str
    probe: Callable[[], bool]
    report: Callable[[float, Optional[float]], None] = _ignore
    lookup: Callable[[str], bool] = _no_lookup
    retries: int = 0  # attempts retried before this one
    options: Optional[Dict[str, Any]] = None  # apply_async's overrides of the class's retry settings
    report_every: float = PROGRESS_INTERVAL


def run(
    target: Any, args: Any, kwargs: Optional[Dict[str, Any]], binding: Binding, *, chunked: bool = False
) -> Tuple[RunOutcome, Optional[Progress]]:
    """The runner contract: build ``target``, bind it, run it; return its outcome and its last progress.

    ``target`` is an ``AbortableTask`` subclass (built here), an instance
    of one (bound here: a runner that must reach it while it runs builds
    it first), or a plain callable (run as it is, with no progress).
    ``chunked``: ``args`` is a chunk of ``map`` items (``execute_chunk``).
    ``KeyboardInterrupt`` is not caught: the caller's process decides.

    >>> class Count(AbortableTask):
    ...     def run(self, n):
    ...         self.progress(n, n)
    ...         return n
    >>> outcome, progress = run(Count, (3,), {}, Binding("t1", probe=lambda: False))
    >>> outcome.state, outcome.result, progress
    ('SUCCESS', 3, (3, 3))
    """
    task = target() if isinstance(target, type) and issubclass(target, AbortableTask) else target
    if isinstance(task, AbortableTask):
        task._bind(binding.task_id, binding.probe, binding.report, binding.lookup, args,
                   kwargs or {}, binding.report_every, binding.retries, binding.options)  # fmt: skip
    outcome = execute_chunk(task, args) if chunked else execute(task, args, kwargs or {})
    return outcome, (task._last_progress if isinstance(task, AbortableTask) else None)


def execute(target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> RunOutcome:
    """Run a bound task instance, or a plain callable, to its outcome (the table in docs/states.md).

    ``KeyboardInterrupt`` is not caught: the caller's process decides.
    """
    if isinstance(target, AbortableTask):
        return _guarded(target, lambda: _finish(target, target.run(*args, **kwargs)), None)
    return _guarded(None, lambda: target(*args, **kwargs), None)


def _finish(task: AbortableTask, value: Any) -> Any:
    """What ``run`` returned; for an ``async def run``, its coroutine, run in an event loop of its own (``_aio``)."""
    if isinstance(value, types.CoroutineType):
        from ._aio import run_task_coroutine

        return run_task_coroutine(task, value)
    return value


def execute_chunk(target: Any, items: List[Tuple[Any, ...]]) -> RunOutcome:
    """Run ``target`` over a chunk of ``map`` items in order, as one task.

    The first item that does not succeed ends the chunk with its outcome;
    an aborted chunk's ``partial_result`` is the list of the items that
    completed.
    """
    values: List[Any] = []
    if not isinstance(target, AbortableTask):
        return _guarded(None, lambda: [target(*args) for args in items], values)
    task = target

    def run_items() -> List[Any]:
        for args in items:
            value = _finish(task, task.run(*args))
            if task._saw_abort:
                return values
            values.append(value)
        return values

    return _guarded(task, run_items, values)


def _guarded(task: Optional[AbortableTask], body: Callable[[], Any], partial: Optional[List[Any]]) -> RunOutcome:
    """The outcome rules, in one place: call ``body`` with ``task`` current and judge how it ended.

    ``partial`` is the list a chunk fills as its items complete; an aborted
    chunk reports it as its partial result.
    """
    global _current
    previous, _current = _current, task
    try:
        value = body()
    except TaskAborted as exc:
        if task is not None and exc.task_id is None:
            exc.task_id = task.task_id
        if partial is not None:
            exc.partial_result = partial
        return RunOutcome(ABORTED, None, exc)
    except Retry as exc:
        assert task is not None  # only a task has retry()
        return _retried(task, exc.exc or exc, traceback.format_exc(), exc.countdown)
    except (Exception, SystemExit) as exc:
        tb = traceback.format_exc()
        if task is not None and isinstance(exc, tuple(task.autoretry_for)) and _retries_left(task):
            return _retried(task, exc, tb, task._backoff())
        return RunOutcome(FAILURE, None, exc, tb)
    finally:
        _current = previous
    if task is not None and task._saw_abort:
        msg = f"task {task.task_id} aborted; run() returned after it saw is_aborted()"
        return RunOutcome(ABORTED, value, TaskAborted(msg, partial_result=value, task_id=task.task_id))
    return RunOutcome(SUCCESS, value, None)


def _retries_left(task: AbortableTask) -> bool:
    return task.max_retries is None or task.request.retries < task.max_retries


def _retried(task: AbortableTask, exc: BaseException, tb: str, countdown: Optional[float]) -> RunOutcome:
    """The outcome of an attempt that asked for another: RETRY, unless an abort came first.

    An abort asked during the attempt ends the task, whatever the attempt
    raised: an aborted task is never retried.
    """
    if task._saw_abort or task._probe():
        msg = f"task {task.task_id} aborted; its attempt ended asking for a retry ({describe(exc)})"
        return RunOutcome(ABORTED, None, TaskAborted(msg, task_id=task.task_id))
    return RunOutcome(RETRY, None, exc, tb, max(0.0, countdown or 0.0))


# Public as ``localabort.<name>``: reprs, pickles and the docs name the package, not this module.
# Doctest looks for examples in the module an object's ``__module__`` names: ``__test__`` points it here.
__test__ = {public.__name__: public for public in (AbortableTask, checkpoint, current_task, is_aborted)}
for _public in __test__.values():
    _public.__module__ = "localabort"
del _public
