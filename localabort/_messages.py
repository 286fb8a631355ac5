"""The messages between the parent and a worker, over the worker's own pipe.

Each is a named tuple (CPython's ``process.py`` names its ``_CallItem``
and ``_ResultItem`` the same way), sent as ``encode`` makes it; the one
message that is not is the empty one, which asks a worker to stop::

    parent --Call------------> worker    a job to run (any number, in order)
    parent --b""-------------> worker    stop (an empty message)
    parent <--Ready----------- worker    once, when it has started (imports and initializer done)
    parent <--InitFailed------ worker    instead, if the executor's initializer raised; it exits
    parent <--Report---------- worker    progress of the job it runs (throttled, any number)
    parent <--Reply----------- worker    exactly one per Call, in order

Aborts are not messages: they are shared-memory words (``_words``).
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, NamedTuple, Optional, Union

from ._states import Progress

__all__ = ["STOP", "Call", "InitFailed", "Message", "Ready", "Reply", "Report", "decode", "encode"]

#: The message that asks a worker to exit.
STOP = b""


class Call(NamedTuple):
    """A job for the worker: run the pickled ``(task, args, kwargs)`` in ``blob``."""

    seq: int  # the job's number, never reused in an executor
    word: int  # its abort word (``_words``)
    ahead: bool  # sent while the worker runs another job: accept it before starting (``AbortWords.accept``)
    task_id: str
    name: str
    blob: bytes
    chunked: bool  # ``args`` is a list of ``map`` items, run as one task
    retries: int = 0  # attempts retried before this one (``self.request.retries``)
    options: Optional[Dict[str, Any]] = None  # apply_async's overrides of the task's retry settings


class Ready(NamedTuple):
    """The worker has started: imports are done, and its time limits may start counting."""


class InitFailed(NamedTuple):
    """The executor's initializer raised in the worker, which exits."""

    initializer: str
    error: str


class Report(NamedTuple):
    """Progress of job ``seq``, as its task last reported it."""

    seq: int
    done: float
    total: Optional[float]


class Reply(NamedTuple):
    """How job ``seq`` ended: its state, its outcome's blob (``_outcome``), the traceback text, and its progress."""

    seq: int
    state: str
    blob: bytes
    traceback: Optional[str]
    progress: Optional[Progress]
    error: Optional[str] = None  # the exception in words (``_outcome.describe``), for the store
    countdown: Optional[float] = None  # RETRY: seconds before the next attempt


Message = Union[Call, Ready, InitFailed, Report, Reply]


#: The kinds of message, by the number that leads each on the pipe.
_KINDS = (Call, Ready, InitFailed, Report, Reply)
_NUMBERS = {kind: number for number, kind in enumerate(_KINDS)}


def encode(message: Message) -> bytes:
    """The bytes of ``message`` on the pipe: a plain tuple, its kind's number first.

    A pickled named tuple names its class, which the other side looks up:
    five times the cost of a plain tuple, for every job and every reply.

    >>> decode(encode(Report(seq=3, done=1.0, total=None)))
    Report(seq=3, done=1.0, total=None)
    """
    return pickle.dumps((_NUMBERS[type(message)], *message), pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Message:
    """The message ``data`` encodes (``STOP`` is checked for before)."""
    fields = pickle.loads(data)
    message: Message = _KINDS[fields[0]](*fields[1:])
    return message
