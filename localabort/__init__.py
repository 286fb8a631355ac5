"""localabort: abortable tasks in a process pool, with every state in one store.

Tasks are ``AbortableTask`` subclasses that check ``self.is_aborted()``;
an ``Executor`` runs them in child processes; ``future.abort()`` asks one
to stop. A task class must live in an importable module for a worker to
load it; here ``localabort.testing.run_inline`` runs one in this process:

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

import typing as _typing

from ._errors import (
    MaxRetriesExceededError,
    Retry,
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
from ._task import AbortableTask, checkpoint, current_task, is_aborted

if _typing.TYPE_CHECKING:
    from ._store import forget

__all__ = [
    "ABORTED",
    "AbortableAsyncResult",
    "AbortableFuture",
    "AbortableTask",
    "Executor",
    "FAILURE",
    "MaxRetriesExceededError",
    "PENDING",
    "RECEIVED",
    "RETRY",
    "Retry",
    "STARTED",
    "SUCCESS",
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


def __getattr__(name: str) -> _typing.Any:
    # SQLAlchemy loads with the first store a process opens, not with this package: a worker under
    # spawn or forkserver imports the package and never needs it.
    if name == "forget":
        from ._store import forget

        return forget
    raise AttributeError(f"module 'localabort' has no attribute {name!r}")
