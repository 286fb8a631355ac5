"""The messages between the parent and a worker, over the worker's own pipe.

Each is a named tuple (CPython's ``process.py`` names its ``_CallItem``
and ``_ResultItem`` the same way), sent as ``encode`` makes it; the one
message that is not is the empty one, which asks a worker to stop::

    parent --Calls-----------> worker    jobs to run (one or more Call, any number of messages, in order)
    parent --b""-------------> worker    stop (an empty message)
    parent <--Ready----------- worker    once, when it has started (imports and initializer done)
    parent <--InitFailed------ worker    instead, if the executor's initializer raised; it exits
    parent <--Report---------- worker    progress of the job it runs (throttled, any number)
    parent <--Log------------- worker    the log of the job it runs, when it changed (every half second at most)
    parent <--Over------------ worker    the job it runs passed its soft or hard memory limit (once each)
    parent <--Reply----------- worker    exactly one per Call, in order

Aborts are not messages: they are shared-memory words (``_words``).
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

from ._states import Progress

__all__ = [
    "STOP", "Call", "Calls", "InitFailed", "Log", "Message", "Over", "Ready", "Reply", "Report", "decode", "encode",
    "receive",
]  # fmt: skip

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
    log_limit: Optional[int] = None  # bytes of its log to keep (``None``: the executor's ``log_limit``)
    memory: Optional[Tuple[Optional[int], Optional[int]]] = None  # its soft and hard memory limits, bytes


class Calls(NamedTuple):
    """Jobs for the worker, in order, in one message: each a ``Call``'s fields (``batch`` makes it)."""

    calls: Tuple[Tuple[Any, ...], ...]

    @classmethod
    def batch(cls, calls: List[Call]) -> Calls:
        return cls(tuple(tuple(call) for call in calls))  # plain tuples pickle in a fifth of the time

    def unpack(self) -> List[Call]:
        return [Call(*fields) for fields in self.calls]


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


class Log(NamedTuple):
    """The log of job ``seq`` so far (``None``: unchanged), and the log records to hand to the parent's handlers."""

    seq: int
    log: Optional[Tuple[str, int]]  # its text, and the bytes dropped before it (``_capture.Tail``)
    records: List[Dict[str, Any]]  # ``_capture.portable`` records, forwarded (spawn and forkserver)


class Reply(NamedTuple):
    """How job ``seq`` ended: its state, its outcome's blob (``_outcome``), the traceback text, and its progress."""

    seq: int
    state: str
    blob: bytes
    traceback: Optional[str]
    progress: Optional[Progress]
    error: Optional[str] = None  # the exception in words (``_outcome.describe``), for the store
    countdown: Optional[float] = None  # RETRY: seconds before the next attempt
    elapsed: float = 0.0  # seconds the job took in the worker (how far ahead the parent sends: ``Scheduler``)
    usage: Optional[Tuple[int, float, Optional[int]]] = None  # its worker's pid, CPU seconds, peak RSS (``Usage``)
    log: Optional[Tuple[str, int]] = None  # its log, if it logged anything: text, and bytes dropped before it
    records: Optional[List[Dict[str, Any]]] = None  # log records not yet forwarded (``Log``)
    retiring: bool = False  # the worker exits after this reply (past ``max_memory_per_child``): send it no more


class Over(NamedTuple):
    """Job ``seq`` uses ``used`` bytes, past its soft memory limit, or its hard one (``hard``)."""

    seq: int
    used: int
    hard: bool


Message = Union[Calls, Ready, InitFailed, Report, Reply, Log, Over]


#: The kinds of message, by the number that leads each on the pipe.
_KINDS = (Calls, Ready, InitFailed, Report, Reply, Log, Over)
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


def receive(conn: Any) -> Optional[bytes]:
    """The next message on ``conn`` (a ``multiprocessing`` connection); ``None`` once it closed or said ``STOP``."""
    try:
        message: bytes = conn.recv_bytes()
    except (EOFError, OSError):
        return None
    return None if message == STOP else message
