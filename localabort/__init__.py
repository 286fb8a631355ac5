"""localabort: abortable tasks in a process pool, with every state in one store.

>>> from localabort import AbortableTask, Executor, TaskAborted
>>> class Count(AbortableTask):
...     def run(self, n):
...         for i in range(n):
...             if self.is_aborted():
...                 return i
...         return n
>>> with Executor(max_workers=1) as ex:
...     ex.submit(Count, 3).result(timeout=30)
3
"""

from ._errors import StoreError, TaskAborted, TimeLimitExceeded, WorkerLost
from ._executor import Executor
from ._future import AbortableAsyncResult, AbortableFuture
from ._states import ABORTED, FAILURE, PENDING, STARTED, SUCCESS
from ._task import AbortableTask, checkpoint, current_task, is_aborted

__all__ = [
    "ABORTED",
    "FAILURE",
    "PENDING",
    "STARTED",
    "SUCCESS",
    "AbortableAsyncResult",
    "AbortableFuture",
    "AbortableTask",
    "Executor",
    "StoreError",
    "TaskAborted",
    "TimeLimitExceeded",
    "WorkerLost",
    "checkpoint",
    "current_task",
    "is_aborted",
]

__version__ = "0.1.0"
