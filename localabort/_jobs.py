"""A job: one task run as the executor tracks it, and how it becomes a future's outcome.

A job's *stage* is where it is in the executor; its *state* is the task
state the store and the future show (``_states``)::

    QUEUED  --> RUNNING   sent to an idle worker
    QUEUED  --> SENT      sent ahead, to a busy worker, to run after its current job
    SENT    --> RUNNING   its worker went on to it (having claimed it, see ``_words``)
    SENT    --> QUEUED    its worker died before reaching it: it runs on another
    QUEUED  --> DONE      aborted or cancelled while queued: it never runs
    SENT    --> DONE      the same, when taken back before its worker claimed it
    RUNNING --> DONE      its worker replied, or died
    RUNNING --> WAITING   its attempt asked to be retried: it waits for its time (state RETRY)
    WAITING --> QUEUED    its time came: queued first, to be claimed again
    WAITING --> DONE      aborted or cancelled while it waits: it never runs again

A queued job is sent only once the store holds its *claim* (``claimed``):
its row says RECEIVED, written in a transaction that then read whether an
abort had been asked for it (``Store.sync``). A job whose key another task
holds is not claimed: it leaves the queue and *follows* that task (QUEUED,
``follows`` set), and ends with its outcome.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ._future import AbortableFuture, Controller
from ._interrupt import user_signals
from ._outcome import describe, dump, load_outcome
from ._states import PENDING, RETRY, SUCCESS, Progress

if TYPE_CHECKING:
    from ._words import AbortWords

__all__ = ["DONE", "QUEUED", "RUNNING", "SENT", "WAITING", "Job", "Usage", "completed", "resolve"]

QUEUED, SENT, RUNNING, WAITING, DONE = "queued", "sent", "running", "waiting", "done"

#: What a task used: its worker's pid, CPU seconds and peak resident memory in bytes, each ``None`` until known.
Usage = Tuple[Optional[int], Optional[float], Optional[int]]


#: The deadline of what has none. One shared float: each ``float("inf")`` is 24 bytes more per pending job.
_NEVER = float("inf")


class Job:
    """One task in the executor: its stage, its task state, its abort word, and what the store gets."""

    __slots__ = (
        "abort_requested",
        "args_repr",
        "blob",
        "chunked",
        "claimed",
        "due",
        "error",
        "eta",
        "finished_at",
        "first_row_owed",
        "follows",
        "future",
        "grace",
        "hard_deadline",
        "id",
        "key",
        "log",
        "log_limit",
        "lost",
        "memory",
        "name",
        "options",
        "progress",
        "result",
        "retries",
        "seq",
        "soft_deadline",
        "soft_limited",
        "soft_memory",
        "soft_time_limit",
        "stage",
        "started_at",
        "state",
        "submitted_at",
        "terminate_after",
        "terminate_at",
        "terminate_deadline",
        "time_limit",
        "traceback",
        "usage",
        "word",
        "words",
    )  # fmt: skip

    def __init__(self, task_id: str, seq: int, name: str, key: Optional[str], controller: Controller) -> None:
        self.id, self.seq, self.name, self.key = task_id, seq, name, key
        self.future = AbortableFuture(task_id, controller)
        self.blob: Optional[bytes] = None  # the pickled (task, args, kwargs) until it ends
        self.args_repr: Optional[str] = None  # the arguments as text, for its first row (``_text.call_repr``)
        self.chunked = False
        self.stage = QUEUED
        self.words: Optional[AbortWords] = None  # the abort words of the slot it was sent to
        self.word = 0  # its abort word among them, while it is sent or running
        self.state = PENDING
        self.submitted_at = time.time()
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.progress: Optional[Progress] = None
        self.result: Optional[bytes] = None  # the outcome's blob once it ended
        self.traceback: Optional[str] = None
        self.error: Optional[str] = None  # "Type: message" of its outcome's exception
        self.abort_requested = False
        # abort(terminate_after=...): kill its worker at terminate_deadline (monotonic; terminate_at, wall clock)
        self.terminate_after: Optional[float] = None
        self.terminate_at: Optional[float] = None
        self.terminate_deadline = _NEVER
        self.grace: Optional[float] = None  # the terminate_after of an abort that names none (Executor, apply_async)
        self.soft_time_limit: Optional[float] = None
        self.time_limit: Optional[float] = None
        self.soft_deadline = self.hard_deadline = _NEVER
        self.soft_limited = False  # its soft time limit, not a user, asked for its abort
        self.memory: Optional[Tuple[Optional[int], Optional[int]]] = None  # soft and hard memory limits, bytes
        self.soft_memory: Optional[str] = None  # its soft memory limit asked for its abort: the words that say so
        self.lost: Optional[BaseException] = None  # why the parent killed its worker
        self.claimed = False  # the store holds its claim (RECEIVED): only then may it start
        self.first_row_owed = False  # new, and its first row not written yet (``Scheduler.fresh``)
        self.options: Optional[Dict[str, Any]] = None  # apply_async's overrides of the task's retry settings
        self.retries = 0  # attempts retried so far
        self.due = _NEVER  # while WAITING: when its next attempt may start (monotonic; eta: wall clock)
        self.eta: Optional[float] = None
        self.follows: Optional[str] = None  # the task holding its key, whose outcome it takes instead of running
        self.log_limit: Optional[int] = None  # bytes of its log to keep, if not the executor's
        self.log: Optional[Tuple[str, int]] = None  # its log as its worker last sent it, until written (``row``)
        self.usage: Optional[Usage] = None  # its worker's pid (once it started), CPU s and peak RSS (once it ended)

    def move(self, state: str) -> None:
        """The job is now in the unfinished ``state``: its future says so at once.

        The one place an unfinished state changes. A final state reaches
        the job when it ends, and its future only once stored (``resolve``):
        a future never says SUCCESS before the store does.
        """
        self.state = self.future._task_state = state

    def end(self, state: str, exc: Optional[BaseException] = None) -> None:
        """Record the job's final state; ``exc``, if given, becomes its stored outcome."""
        self.stage, self.state, self.finished_at = DONE, state, time.time()
        if exc is not None:
            self.result, self.error = dump(exc), describe(exc)

    def terminate_by(self, after: float, asked: bool = True) -> bool:
        """Kill its worker ``after`` seconds from now, unless an earlier time was asked; whether this one is earlier.

        ``asked``: ``after`` is what ``abort(terminate_after=...)`` asked, not what is left of it.
        """
        deadline = time.monotonic() + max(0.0, after)
        if deadline >= self.terminate_deadline:
            return False
        self.terminate_after, self.terminate_deadline = (after if asked else -1.0), deadline
        self.terminate_at = time.time() + max(0.0, after)
        return True

    def wait_to_retry(self, countdown: float) -> None:
        """Its attempt asked for another in ``countdown`` s: it waits (RETRY), holding no worker and no claim."""
        self.stage, self.words, self.claimed = WAITING, None, False
        self.move(RETRY)
        self.retries += 1
        self.due, self.eta = time.monotonic() + countdown, time.time() + countdown
        self.soft_deadline = self.hard_deadline = self.terminate_deadline = _NEVER  # they are per attempt
        self.soft_limited, self.lost, self.terminate_after, self.terminate_at = False, None, None, None
        self.soft_memory = None

    def start_clock(self) -> None:
        """Start its time limits: from when a started worker has it, not from a worker's own start-up."""
        now = time.monotonic()
        if self.soft_time_limit is not None:
            self.soft_deadline = now + self.soft_time_limit
        if self.time_limit is not None:
            self.hard_deadline = now + self.time_limit


def resolve(jobs: List[Job]) -> None:
    """Complete the futures of finished jobs, emptying ``jobs``; their rows must already be stored.

    Each job leaves the list as soon as its future completes, so this
    thread holds no result once its caller may have dropped it; while it
    completes, it is still in the list (``Manager.open_futures`` looks there).
    """
    jobs.reverse()
    while jobs:
        job = jobs[-1]
        job.future._task_usage = job.usage
        _settle(job.future, job.state, job.result, job.traceback, job.progress)
        jobs.pop()


def completed(task_id: str, blob: Optional[bytes], progress: Any) -> AbortableFuture:
    """A future already holding a stored SUCCESS (``key=`` resume)."""
    future = AbortableFuture(task_id)
    _settle(future, SUCCESS, blob, None, progress)
    return future


def _settle(future: AbortableFuture, state: str, blob: Optional[bytes], tb: Optional[str], progress: Any) -> None:
    future._task_state, future._task_progress = state, progress
    result, exc = load_outcome(state, blob, tb)
    # Its done-callbacks are user code, run here: on the manager's thread, with the signals a user thread has.
    with user_signals() if future._done_callbacks else contextlib.nullcontext():
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
