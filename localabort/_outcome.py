"""How a run ended, and how that travels: pickled in the child, capped, stored, loaded again.

A run ends in a ``RunOutcome``: a final state, what ``run`` returned, the
exception ``result()`` raises (``None`` for SUCCESS) and the child's
traceback text. It crosses processes and sits in the store as one pickle,
the *blob*: the return value for SUCCESS, else the exception (a
``TaskAborted`` carries the partial result). Every blob is made, capped and
read by the functions below::

    a worker:            pickle_outcome() --> blob --Reply--> (manager) within_limit() --> store
    a Celery task:       pickle_outcome() --> blob --> store
    ended without a run: dump(unrun(...)), dump(terminated(...)), dump(WorkerLost(...)) --> store
    result(), get():     load_outcome(blob)

The outcome *rules* (which state a run ends in) are ``_task.execute``'s.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, NamedTuple, Optional, Tuple

from ._errors import (
    MemoryLimitExceeded,
    RemoteTraceback,
    SoftMemoryLimitExceeded,
    SoftTimeLimitExceeded,
    TaskAborted,
)  # fmt: skip
from ._memory import format_size
from ._states import ABORTED, FAILURE, SUCCESS

__all__ = [
    "MAX_RESULT_BYTES",
    "RunOutcome",
    "by_memory_cap",
    "by_soft_limit",
    "describe",
    "dump",
    "load_outcome",
    "pickle_outcome",
    "terminated",
    "unrun",
    "within_limit",
]

#: The largest pickled result the store takes (SQLite refuses values over 10**9 bytes).
MAX_RESULT_BYTES = 900_000_000
PROTOCOL = pickle.HIGHEST_PROTOCOL


class RunOutcome(NamedTuple):
    """How one run of a task ended (``localabort.testing.Outcome`` is the public view of it).

    RETRY: the attempt asked for another, ``countdown`` seconds from now;
    ``exception`` is the error it retries on.
    """

    state: str
    result: Any
    exception: Optional[BaseException]
    traceback: Optional[str] = None
    countdown: Optional[float] = None


def dump(obj: Any) -> bytes:
    """The blob of a value or an exception; an exception that cannot be pickled is stored as a copy."""
    if isinstance(obj, BaseException):
        return _dump_exception(obj)[1]
    return pickle.dumps(obj, PROTOCOL)


def _dump_exception(exc: BaseException) -> Tuple[BaseException, bytes]:
    """``exc``, or the copy stored for it if it cannot be pickled, and its blob."""
    try:
        return exc, pickle.dumps(exc, PROTOCOL)
    except Exception as err:
        copy = _picklable_copy(exc, err)
        return copy, pickle.dumps(copy, PROTOCOL)


def unrun(task_id: str, how: str = "aborted", waiting: bool = False) -> TaskAborted:
    """The error of a task that ended before it started (or, ``waiting``, before its next attempt).

    ``how`` is "aborted", "cancelled" or "terminated".
    """
    when = "while it waited to retry" if waiting else "before it started"
    return TaskAborted(f"task {task_id} {how} {when}", task_id=task_id)


def terminated(task_id: str, after: Optional[float] = None) -> TaskAborted:
    """The error of a task whose worker was killed on purpose.

    ``after`` is the ``terminate_after`` of the ``abort()`` it outlived
    (``-1`` when not known here: asked through the store); ``None`` for a
    second Ctrl-C or ``terminate_workers()``.
    """
    if after is None:
        return TaskAborted(f"task {task_id} terminated", task_id=task_id)
    if after == 0:
        why = "at once, as its abort asked (terminate_after=0)"
    else:
        given = "" if after < 0 else f" of {after:g}s"
        why = f"still running when the terminate_after{given} its abort gave it ran out"
    return TaskAborted(f"task {task_id} terminated: {why}", task_id=task_id)


#: The most characters of an error the store keeps in its ``error`` column (the pickled exception keeps it all).
ERROR_CHARS = 500


def describe(exc: Optional[BaseException]) -> Optional[str]:
    """``Type: message``, on one line, as ``status`` and ``show`` print an error; ``None`` for no error."""
    if exc is None:
        return None
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 3] + "..."


def by_soft_limit(outcome: RunOutcome, what: str, limit: Optional[float], memory: Optional[str] = None) -> RunOutcome:
    """The outcome of ``what``, whose soft limit asked it to stop: an abort it honoured says a limit asked.

    The soft time limit of ``limit`` seconds, or, given ``memory`` (which
    says it: "used 230 MiB, past its soft_memory_limit of 200 MiB"), the
    soft memory limit. Any other outcome (it succeeded anyway, or failed)
    is left as it is.
    """
    if outcome.state != ABORTED:
        return outcome
    exc = outcome.exception
    kind, words = (
        (SoftTimeLimitExceeded, f"passed its soft_time_limit of {limit}s") if memory is None
        else (SoftMemoryLimitExceeded, memory)
    )  # fmt: skip
    return outcome._replace(exception=kind(
        f"{what} {words} and stopped",
        partial_result=getattr(exc, "partial_result", None), task_id=getattr(exc, "task_id", None),
    ))  # fmt: skip


def by_memory_cap(outcome: RunOutcome, what: str, hard: Optional[int]) -> RunOutcome:
    """The outcome of ``what``, run under the address-space cap of its ``memory_limit`` of ``hard`` bytes.

    A ``MemoryError`` there is the cap's doing: FAILURE with
    ``MemoryLimitExceeded``, which says so. Any other outcome is left as it is.
    """
    if hard is None or not isinstance(outcome.exception, MemoryError):
        return outcome
    exc = MemoryLimitExceeded(f"{what} asked for more memory than its memory_limit of {format_size(hard)} allows "
                              "(the address-space cap)")  # fmt: skip
    return outcome._replace(state=FAILURE, exception=exc)


def pickle_outcome(outcome: RunOutcome, name: str) -> Tuple[RunOutcome, bytes]:
    """The outcome as it will be stored, and its blob.

    A result that cannot be pickled turns the outcome into a FAILURE: the
    error pickling raised (of its own type, as ``ProcessPoolExecutor``
    reports it, even a ``SystemExit``), with words that say what failed. An
    exception that cannot be pickled is stored as a copy that keeps its
    text (and stays a ``TaskAborted`` if it was one).
    """
    state, result, exc, tb, _ = outcome
    if state != SUCCESS:
        assert exc is not None
        stored, blob = _dump_exception(exc)
        return (outcome if stored is exc else outcome._replace(result=None, exception=stored)), blob
    try:
        return outcome, pickle.dumps(result, PROTOCOL)
    except BaseException as err:  # a worker ignores SIGINT: this is the result's own doing
        err.args = (f"the result of {name} cannot be pickled ({err}); return plain data (numbers, str, lists, dicts)",)
        return RunOutcome(FAILURE, None, err, tb), dump(err)


def _picklable_copy(exc: Any, err: Exception) -> BaseException:
    """A copy of ``exc`` that pickles: a ``TaskAborted`` without its partial result, else a ``RuntimeError``."""
    if isinstance(exc, TaskAborted):
        try:
            pickle.dumps(exc.partial_result, PROTOCOL)
        except Exception:  # the partial result is what cannot be pickled: say so, and keep the rest
            copy = TaskAborted(
                f"{exc} (its partial result, a {type(exc.partial_result).__name__}, cannot be pickled: {err}; "
                "return plain data: numbers, str, lists, dicts)", task_id=exc.task_id,
            )  # fmt: skip
            return copy
        return TaskAborted(f"{exc} (this TaskAborted cannot be pickled: {err})", task_id=exc.task_id)
    return RuntimeError(f"{type(exc).__name__}: {exc} (the exception itself cannot be pickled: {err})")


def within_limit(state: str, blob: bytes, tb: Optional[str], what: str) -> Tuple[str, bytes, Optional[str]]:
    """``(state, blob, tb)``, or a FAILURE saying why if ``blob`` is over ``MAX_RESULT_BYTES``."""
    if len(blob) <= MAX_RESULT_BYTES:
        return state, blob, tb
    error = ValueError(
        f"the result of {what} is {len(blob):,} bytes pickled, over the store's limit of "
        f"{MAX_RESULT_BYTES:,}; write large data to a file and return its path"
    )
    return FAILURE, dump(error), None


def load_outcome(state: str, blob: Optional[bytes], tb: Optional[str]) -> Tuple[Any, Optional[BaseException]]:
    """The ``(result, exception)`` a finished task's blob stands for.

    A blob this process cannot unpickle (a class it cannot import, say)
    becomes the exception: ``result()`` raises it rather than the caller
    crashing (a ``SystemExit`` raised while unpickling becomes a
    ``RuntimeError`` caused by it). The child's traceback text becomes the exception's cause.
    """
    try:
        payload = pickle.loads(blob) if blob is not None else None
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():  # a Ctrl-C: the script decides
            raise
        error = RuntimeError("the outcome of a task cannot be unpickled here (KeyboardInterrupt)")
        return None, error  # one raised by a __reduce__, in the executor's manager thread
    except Exception as err:
        return None, err
    except BaseException as err:  # SystemExit from a __reduce__: never let it end the reader
        error = RuntimeError(f"the outcome of a task cannot be unpickled here ({type(err).__name__}: {err})")
        error.__cause__ = err
        return None, error
    if state == SUCCESS:
        return payload, None
    if not isinstance(payload, BaseException):  # pragma: no cover - a row from elsewhere
        payload = TaskAborted("task aborted") if state == ABORTED else RuntimeError(f"task ended {state}")
    if tb:
        payload.__cause__ = RemoteTraceback(tb)  # type: ignore[arg-type]  # typeshed has it take a traceback object
    return None, payload
