"""localabort: abortable tasks in a process pool, with every state in one store.

Tasks are ``AbortableTask`` subclasses that check ``self.is_aborted()``;
an ``Executor`` runs them in child processes; ``future.abort()`` asks one
to stop. A task importable by name goes to a worker by name; a lambda, a
closure or a notebook's class goes by value (cloudpickle). Here
``localabort.testing.run_inline`` runs one in this process:

>>> from localabort import AbortableTask
>>> from localabort.testing import run_inline
>>> class Count(AbortableTask):
...     def run(self, n):
...         for i in range(n):
...             if self.is_aborted():
...                 return i
...         return n
>>> run_inline(Count, 3).result
3
>>> run_inline(Count, 3, abort_after=2).state
'ABORTED'
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._errors import (
        MaxRetriesExceededError,
        MemoryLimitExceeded,
        Retry,
        SoftMemoryLimitExceeded,
        SoftTimeLimitExceeded,
        StoreError,
        TaskAborted,
        TimeLimitExceeded,
        UnknownTask,
        WorkerLost,
    )
    from ._executor import Executor
    from ._future import AbortableAsyncResult, AbortableFuture
    from ._states import ABORTED, FAILURE, PENDING, RECEIVED, RETRY, STARTED, SUCCESS
    from ._store import forget
    from ._task import AbortableTask, checkpoint, current_task, is_aborted

__all__ = [
    "ABORTED",
    "AbortableAsyncResult",
    "AbortableFuture",
    "AbortableTask",
    "Executor",
    "FAILURE",
    "MaxRetriesExceededError",
    "MemoryLimitExceeded",
    "PENDING",
    "RECEIVED",
    "RETRY",
    "Retry",
    "STARTED",
    "SUCCESS",
    "SoftMemoryLimitExceeded",
    "SoftTimeLimitExceeded",
    "StoreError",
    "TaskAborted",
    "TimeLimitExceeded",
    "UnknownTask",
    "WorkerLost",
    "checkpoint",
    "current_task",
    "forget",
    "is_aborted",
]

__version__ = "0.1.0"


#: Where each public name lives. A name is imported the first time it is used, so ``import localabort``
#: is quick: a worker under spawn loads what it runs, and the command line loads no pool to print its help
#: (SQLAlchemy loads only where a store needs it: ``_store``).
_HOMES = {
    **dict.fromkeys(
        ["MaxRetriesExceededError", "MemoryLimitExceeded", "Retry", "SoftMemoryLimitExceeded", "SoftTimeLimitExceeded",
         "StoreError", "TaskAborted", "TimeLimitExceeded", "UnknownTask", "WorkerLost"], "._errors",
    ),
    "Executor": "._executor",
    "AbortableAsyncResult": "._future",
    "AbortableFuture": "._future",
    **dict.fromkeys(["ABORTED", "FAILURE", "PENDING", "RECEIVED", "RETRY", "STARTED", "SUCCESS"], "._states"),
    "forget": "._store",
    **dict.fromkeys(["AbortableTask", "checkpoint", "current_task", "is_aborted"], "._task"),
}  # fmt: skip


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'localabort' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> _typing.List[str]:
    return sorted({*globals(), *__all__})
