"""The exceptions localabort raises, and how they travel between processes.

::

    BaseException
     +-- Exception
          +-- concurrent.futures.CancelledError
          |    +-- TaskAborted          the task was aborted (result() of an ABORTED task)
          |         +-- SoftTimeLimitExceeded   ... by its soft_time_limit, not by a user
          |         +-- SoftMemoryLimitExceeded ... by its soft_memory_limit, not by a user
          +-- RuntimeError
          |    +-- concurrent.futures.BrokenExecutor
          |         +-- concurrent.futures.process.BrokenProcessPool
          |              +-- WorkerLost    the child running the task died
          +-- TimeLimitExceeded         the task passed its hard time limit
          +-- MemoryLimitExceeded       the task passed its hard memory limit
          +-- StoreError                the state store cannot be opened or used
          +-- LookupError
               +-- UnknownTask          no executor handed out this task id

Every one pickles, so a child can send it to its parent and the store can
keep it. A stored pickle names a class by its module: the public ones say
``localabort`` (their ``__module__``, set below, as httpx does), so a
pickle never names a private module, and private modules can be renamed
without breaking a store.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import copyreg
from typing import Any, Optional

__all__ = [
    "MaxRetriesExceededError",
    "MemoryLimitExceeded",
    "RemoteTraceback",
    "Retry",
    "SoftMemoryLimitExceeded",
    "SoftTimeLimitExceeded",
    "StoreError",
    "TaskAborted",
    "TimeLimitExceeded",
    "UnknownTask",
    "WorkerLost",
]


class TaskAborted(concurrent.futures.CancelledError):
    """The task was aborted; raised by ``result()``/``get()`` of an ABORTED task.

    Tasks may also raise it themselves (``checkpoint()`` does) to stop from
    deep inside a call stack. ``partial_result`` is what ``run`` returned
    after it saw the abort, or ``None``.

    >>> err = TaskAborted("stopped", partial_result=[0, 1])
    >>> err.partial_result
    [0, 1]
    >>> import concurrent.futures
    >>> isinstance(err, concurrent.futures.CancelledError)
    True
    """

    def __init__(self, *args: object, partial_result: Any = None, task_id: Optional[str] = None) -> None:
        super().__init__(*args)
        self.partial_result = partial_result
        self.task_id = task_id

    def __reduce__(self) -> Any:
        # Rebuilt without calling __init__ (a subclass's may take other arguments), through the
        # class's own name: pickle writes ``copyreg.__newobj__`` as NEWOBJ, naming no helper.
        return (copyreg.__newobj__, (type(self), *self.args), self.__dict__)  # type: ignore[attr-defined]


class SoftTimeLimitExceeded(TaskAborted):
    """The task passed its ``soft_time_limit``: an abort was asked for it, and it stopped.

    A ``TaskAborted``, so handlers of aborts keep working; catch this one to
    tell a time limit from a user's abort. ``partial_result`` is what ``run``
    returned after it saw the abort (Celery raises an exception of this name
    inside the task; here the task sees ``is_aborted()`` as for any abort).

    >>> err = SoftTimeLimitExceeded("Crunch passed its soft_time_limit of 5s", partial_result=[1])
    >>> isinstance(err, TaskAborted), err.partial_result
    (True, [1])
    """


class SoftMemoryLimitExceeded(TaskAborted):
    """The task's memory passed its ``soft_memory_limit``: an abort was asked for it, and it stopped.

    A ``TaskAborted``, as ``SoftTimeLimitExceeded`` is: ``partial_result``
    is what ``run`` returned after it saw the abort.

    >>> err = SoftMemoryLimitExceeded("Crunch used 230 MiB, past its soft_memory_limit of 200 MiB", partial_result=7)
    >>> isinstance(err, TaskAborted), err.partial_result
    (True, 7)
    """


class Retry(Exception):
    """Raised by ``self.retry()``: the task asks for another attempt (Celery's ``celery.exceptions.Retry``).

    ``exc`` is the error that made it retry (``result()`` raises it if no
    attempt is left), ``countdown`` the seconds to wait first. ``raise
    self.retry(...)`` reads as in Celery; ``retry()`` raises it itself.

    >>> err = Retry(exc=ConnectionError("reset"), countdown=5)
    >>> err.countdown, str(err)
    (5, 'retry in 5s: ConnectionError: reset')
    """

    def __init__(self, message: Optional[str] = None, exc: Optional[BaseException] = None,
                 countdown: Optional[float] = None) -> None:  # fmt: skip
        self.exc, self.countdown = exc, countdown
        cause = "" if exc is None else f": {type(exc).__name__}: {exc}"
        when = "" if countdown is None else f" in {countdown:g}s"
        super().__init__(message or f"retry{when}{cause}")

    def __reduce__(self) -> Any:
        return (copyreg.__newobj__, (type(self), *self.args), self.__dict__)  # type: ignore[attr-defined]


class MaxRetriesExceededError(Exception):
    """``self.retry()`` with no error to raise, once ``max_retries`` attempts were retried (Celery's name).

    >>> str(MaxRetriesExceededError("Fetch [t1] retried 3 times, its max_retries"))
    'Fetch [t1] retried 3 times, its max_retries'
    """


class WorkerLost(concurrent.futures.process.BrokenProcessPool):
    """The child process running the task died (crash, kill, out of memory).

    Only that task fails: the executor starts a new child and goes on. It
    is a ``BrokenProcessPool``, the error ``ProcessPoolExecutor`` raises
    when a child dies, so code written for that pool still catches it; but
    here the pool is not broken.

    >>> str(WorkerLost("child 4242 died with signal SIGKILL"))
    'child 4242 died with signal SIGKILL'
    """


class TimeLimitExceeded(Exception):
    """The task ran past its hard ``time_limit`` and its child was killed.

    >>> isinstance(TimeLimitExceeded("Crunch ran past time_limit=5s"), Exception)
    True
    """


class MemoryLimitExceeded(Exception):
    """The task's memory passed its hard ``memory_limit`` and its worker was killed.

    >>> isinstance(MemoryLimitExceeded("Crunch used 260 MiB, past its memory_limit of 256 MiB"), Exception)
    True
    """


class StoreError(Exception):
    """The state store cannot be opened or used; the message names the store.

    >>> str(StoreError("/no/such/dir/batch.sqlite: folder does not exist"))
    '/no/such/dir/batch.sqlite: folder does not exist'
    """


class UnknownTask(LookupError):
    """The store holds no task of this id, and no executor on it handed one out.

    Raised by ``AbortableAsyncResult``'s ``state``, ``get()`` and ``abort()``
    (and ``localabort abort``/``show``, exit status 1), where Celery would
    answer PENDING for ever. An id ``submit()`` returned is never unknown:
    an abort asked for it before its row is written is kept, and honoured.

    >>> str(UnknownTask("no task 0a1b in batch.sqlite"))
    'no task 0a1b in batch.sqlite'
    """


#: The cause attached to an exception raised in a child, holding its traceback text: CPython's own
#: class, so code (and CPython's tests) written for ProcessPoolExecutor find what they expect.
RemoteTraceback = concurrent.futures.process._RemoteTraceback


# Public as ``localabort.<name>``: reprs, pickles and the docs name the package, not this module.
# Doctest looks for examples in the module an object's ``__module__`` names: ``__test__`` points it here.
__test__ = {public.__name__: public for public in (
    TaskAborted, SoftTimeLimitExceeded, SoftMemoryLimitExceeded, Retry, MaxRetriesExceededError, WorkerLost,
    TimeLimitExceeded, MemoryLimitExceeded, StoreError, UnknownTask,
)}  # fmt: skip
for _public in __test__.values():
    _public.__module__ = "localabort"
del _public


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """Stores written by localabort 0.1 pickled ``TaskAborted`` through this name; kept to read them."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc
