"""A job: one task run as the executor tracks it, and how it becomes a future's outcome."""

from __future__ import annotations

import pickle
import random
import time
import uuid
from typing import Any, List, Optional, Tuple

from ._future import AbortableFuture, load_outcome
from ._states import PENDING, SUCCESS

__all__ = ["DONE", "QUEUED", "RUNNING", "SENT", "Job", "completed", "new_id", "resolve", "task_name"]

#: A job's life in the executor: queued in the parent, sent to a worker that is busy with another job
#: (it runs next), running, done.
QUEUED, SENT, RUNNING, DONE = "queued", "sent", "running", "done"
PROTOCOL = pickle.HIGHEST_PROTOCOL


class Job:
    __slots__ = (
        "abort_requested",
        "blob",
        "chunked",
        "finished_at",
        "flag",
        "future",
        "hard_deadline",
        "id",
        "key",
        "lost",
        "name",
        "progress",
        "recorded",
        "result",
        "seq",
        "slot",
        "soft_deadline",
        "soft_time_limit",
        "started_at",
        "state",
        "status",
        "submitted_at",
        "time_limit",
        "traceback",
    )  # fmt: skip

    def __init__(self, task_id: str, seq: int, name: str, key: Optional[str], controller: Any) -> None:
        self.id, self.seq, self.name, self.key = task_id, seq, name, key
        self.future = AbortableFuture(task_id, controller)
        self.blob: Optional[bytes] = None
        self.chunked = False
        self.status = QUEUED
        self.slot: Any = None  # the pool slot it was sent to
        self.flag = 0  # its word in the abort-flag array while it is sent or running
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
        self.recorded = False  # the store has its row: only then may it start

    def end(self, state: str, exc: Optional[BaseException] = None) -> None:
        """Record the job's final state; ``exc``, if given, becomes its stored outcome."""
        self.status, self.state, self.finished_at = DONE, state, time.time()
        if exc is not None:
            self.result = pickle.dumps(exc, PROTOCOL)


def new_id() -> str:
    """A task id: a UUID in the version 7 layout (RFC 9562), its first 48 bits the time in ms.

    Ids made one after the other sort together, so the store's id index
    grows at one end: with random (version 4) ids every write touches
    pages all over it, and writes slow down as the store grows.
    ``random`` is reseeded in every forked child, so children never repeat
    their parent's ids.
    """
    ms = time.time_ns() // 1_000_000
    bits = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((bits >> 62) << 64) | (0b10 << 62) | (bits & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def task_name(task: Any) -> str:
    qualname = getattr(task, "__qualname__", None) or type(task).__qualname__
    module = getattr(task, "__module__", None) or type(task).__module__
    return f"{module}.{qualname}"


def resolve(jobs: List[Job]) -> None:
    """Resolve the futures of finished jobs; their rows must already be stored."""
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


def completed(task_id: str, blob: Optional[bytes], progress: Any) -> AbortableFuture:
    """A future already holding a stored SUCCESS (``key=`` resume)."""
    future = AbortableFuture(task_id)
    future._la_state, future._la_progress = SUCCESS, progress
    future.set_result(load_outcome(SUCCESS, blob, None)[0])
    return future
