"""The child side: one worker process, running the jobs its parent sends, one at a time.

The worker reads ``Calls`` messages from its pipe (``_messages``), each
holding one or more jobs, and runs the jobs in order, answering each with
one ``Reply`` (and ``Report`` messages before it, for progress). The
parent sends jobs while this one runs, as many as the jobs are short, so
the worker goes from one job to the next without waiting for the parent;
such a job, sent ``ahead``, is accepted before it starts,
and one the parent aborted first is answered ABORTED unrun (``_words``).
A task's ``is_aborted()`` reads the job's abort word: the worker binds it
to ``AbortWords.probe``.

The worker ignores SIGINT and SIGHUP (a terminal's Ctrl-C, or its
closing, reaches the whole process group; the producer alone decides what
it means), dies of SIGTERM, exits when its pipe closes or sends the empty
message, and exits at once if its parent dies. It leads a process group
of its own, which the processes its tasks start join: the parent kills the
group, not the worker alone (at a time limit, at ``terminate_after``, at
shutdown), and so does the worker when its parent dies.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, NamedTuple, Optional, Tuple, cast

from ._capture import DEFAULT_LOG_LIMIT, Capture, Usage
from ._interrupt import start_thread
from ._memory import TaskMemory, resident
from ._messages import Call, Calls, InitFailed, Log, Over, Ready, Reply, Report, decode, encode, receive
from ._outcome import RunOutcome, by_memory_cap, describe, pickle_outcome, unrun
from ._states import ABORTED, FAILURE, Progress
from ._task import Binding, run, task_name
from ._words import AbortWords

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["MAIN_UNGUARDED", "WorkerSetup", "worker_main"]

#: The exit status of a worker whose import of the main script made an ``Executor`` (no ``__main__`` guard).
MAIN_UNGUARDED = 78


class WorkerSetup(NamedTuple):
    """What every worker of an executor starts with."""

    store_url: str
    initializer: Optional[Callable[..., object]] = None
    initargs: Tuple[Any, ...] = ()
    max_tasks: Optional[int] = None  # exit after answering this many calls
    log_limit: int = DEFAULT_LOG_LIMIT  # bytes of each task's log kept, unless its call says otherwise
    log_level: int = logging.WARNING  # the parent's root logger's level, for a worker with no handlers of its own
    max_memory: Optional[int] = None  # exit after a task that leaves this process's resident memory above it


def worker_main(conn: multiprocessing.connection.Connection, words: AbortWords, setup: WorkerSetup) -> None:
    """Serve jobs from ``conn`` until it closes, sends the empty message, or ``max_tasks`` are done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the producer decides, as for Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the producer's handler, forked: terminate_workers kills
    # SIGINT and SIGHUP, blocked at start (``Slot``), are dropped; and whatever the thread that started this
    # worker blocked (the manager's blocks every signal) is the task's to block, not ours.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.setpgid(0, 0)  # a group of its own, with the processes its tasks start: the parent kills them together
    _hand_down_nothing(conn)
    _exit_with_parent()
    if setup.initializer is not None:
        try:
            setup.initializer(*setup.initargs)
        except BaseException as exc:
            # As ProcessPoolExecutor does, on the logger its users configure.
            logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
            conn.send_bytes(encode(InitFailed(task_name(setup.initializer), f"{type(exc).__name__}: {exc}")))
            return
    # Under spawn and forkserver nothing configured this process's logging: its records go to the parent's.
    forward = not logging.getLogger().handlers
    if forward:
        logging.getLogger().setLevel(setup.log_level)
    pipe, usage, lookup = _Pipe(conn), Usage(), _Lookup(setup.store_url)
    # No capture at all until a task keeps a log, or records go to the parent: log_limit=0 costs nothing.
    capture = _capture(pipe, forward) if forward or setup.log_limit else None
    pipe.send(encode(Ready()))
    calls: Deque[Call] = collections.deque()  # sent, not yet reached: a message may hold several
    memory = _Memory(pipe, setup.max_memory)
    for _ in itertools.count() if setup.max_tasks is None else range(setup.max_tasks):
        while not calls:
            message = receive(conn)
            if message is None:
                return
            calls.extend(cast(Calls, decode(message)).unpack())  # the parent sends only calls
        call = calls.popleft()
        if call.ahead and not words.accept(call.word, call.seq):
            pipe.send(_reply(call.seq, RunOutcome(ABORTED, None, unrun(call.task_id)), None, call.name))
        else:
            limit = setup.log_limit if call.log_limit is None else call.log_limit
            if limit and capture is None:
                capture = _capture(pipe, forward)
            if _run(pipe, words, call, lookup, capture, usage, limit, memory):
                return  # past max_memory_per_child: the parent starts a new worker in this one's place


class _Pipe:
    """The worker's end of its pipe, which the task's threads and the log's share: one message at a time."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: bytes) -> None:
        with self.lock:
            self.conn.send_bytes(message)


def _capture(pipe: _Pipe, forward: bool) -> Capture:
    """Capture what this worker's tasks say, and start the thread that sends it as it changes."""
    capture = Capture(forward)

    def send(seq: int, log: Optional[Tuple[str, int]], records: List[Dict[str, Any]]) -> bool:
        try:
            pipe.conn.send_bytes(encode(Log(seq, log, records)))
        except OSError:  # the pipe closed: the worker is on its way out
            return False
        return True

    # Under the pipe's lock: a reply, sent under it, never overtakes an earlier log.
    thread = threading.Thread(target=capture.send_changes, args=(pipe.lock, send), name="localabort-log", daemon=True)
    start_thread(thread)
    return capture


class _Memory:
    """This worker's memory limits: the watch over a task with a limit, and the check after each task."""

    def __init__(self, pipe: _Pipe, max_memory: Optional[int]) -> None:
        self.pipe, self.max_memory = pipe, max_memory
        self.limits = TaskMemory(self._over)

    def begin(self, call: Call) -> Optional[int]:
        """Watch ``call``'s task if it has a memory limit, cap the address space for a hard one; return that."""
        soft, hard = call.memory or (None, None)
        self.limits.begin(call.seq, soft, hard)
        return hard

    def _over(self, seq: int, used: int, hard: bool) -> None:
        with contextlib.suppress(OSError):  # the pipe closed: the worker is on its way out
            self.pipe.send(encode(Over(seq, used, hard)))

    def end(self, outcome: RunOutcome, call: Call, hard: Optional[int]) -> Tuple[RunOutcome, bool]:
        """Stop watching; the outcome as it stands, and whether this worker is to exit after its reply.

        A ``MemoryError`` under the address-space cap is the hard limit's
        doing (``by_memory_cap``): the worker, whose heap may be in pieces, goes.
        """
        self.limits.end()
        capped = by_memory_cap(outcome, f"{call.name} [{call.task_id}]", hard)
        if capped is not outcome:
            return capped, True
        return outcome, self.max_memory is not None and resident() > self.max_memory


def _run(
    pipe: _Pipe, words: AbortWords, call: Call, lookup: _Lookup, capture: Optional[Capture], usage: Usage,
    limit: int, memory: _Memory,
) -> bool:  # fmt: skip
    """Run one call and reply; whether this worker is to exit now (``max_memory_per_child``)."""
    seq = call.seq
    try:
        target, args, kwargs = pickle.loads(call.blob)
    except BaseException as exc:
        msg = (
            f"a worker could not load {call.name} [{call.task_id}] ({type(exc).__name__}: {exc}); define it at "
            "module level, before the Executor is made (under spawn and forkserver, workers import a script's "
            "__main__ again, without its `if __name__ == '__main__':` block)"
        )
        pipe.send(_reply(seq, RunOutcome(FAILURE, None, RuntimeError(msg)), None, call.name))
        return False

    def report(done: float, total: Optional[float]) -> None:
        pipe.send(encode(Report(seq=seq, done=done, total=total)))

    binding = Binding(call.task_id, words.probe(call.word, seq), report, lookup, call.retries, call.options)
    if capture is not None:
        capture.begin(call.task_id, limit, seq)
    usage.begin()
    hard = memory.begin(call)
    start = time.perf_counter()
    try:
        outcome, progress = run(target, args, kwargs, binding, chunked=call.chunked)
    except BaseException as exc:  # KeyboardInterrupt raised by the task itself
        outcome, progress = RunOutcome(FAILURE, None, exc), None
    elapsed, used = time.perf_counter() - start, usage.end()
    outcome, retiring = memory.end(outcome, call, hard)
    with pipe.lock:
        log, records = capture.end() if capture is not None else (None, [])
        pipe.conn.send_bytes(_reply(seq, outcome, progress, task_name(target), elapsed, used, log, records or None,
                                    retiring))  # fmt: skip
    return retiring


def _reply(
    seq: int, outcome: RunOutcome, progress: Optional[Progress], name: str, elapsed: float = 0.0,
    usage: Optional[Tuple[int, float, Optional[int]]] = None, log: Optional[Tuple[str, int]] = None,
    records: Optional[List[Dict[str, Any]]] = None, retiring: bool = False,
) -> bytes:  # fmt: skip
    (state, _, exc, tb, countdown), blob = pickle_outcome(outcome, name)
    return encode(Reply(seq=seq, state=state, blob=blob, traceback=tb, progress=progress, error=describe(exc),
                        countdown=countdown, elapsed=elapsed, usage=usage, log=log, records=records,
                        retiring=retiring))  # fmt: skip


class _Lookup:
    """``is_aborted(task_id=...)`` for other tasks: a store read, the store opened on first use."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
        self.store: Optional[Store] = None

    def __call__(self, task_id: str) -> bool:
        if self.store is None:
            from ._store import Store  # the store loads only in a worker that asks about another task

            self.store = Store.open(self.store_url)
        return self.store.is_abort_requested(task_id)


def _hand_down_nothing(conn: multiprocessing.connection.Connection) -> None:
    """A process a task forks gets /dev/null where this worker's pipe was: the parent sees the worker's end.

    (The file stays open under its number: the pipe's object, if the child
    ever drops it, closes /dev/null, not a file the child opened since.)
    """
    fd = conn.fileno()

    def in_child() -> None:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, fd)
        os.close(null)

    os.register_at_fork(after_in_child=in_child)


def _exit_with_parent() -> None:
    """Exit this child, and its process group, as soon as the parent process dies, even mid-task."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set in a multiprocessing child
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os.killpg(0, signal.SIGKILL)  # this worker, and the processes its tasks started
        os._exit(1)  # pragma: no cover - not reached

    # Blind to signals: a task's own handler (``signal.alarm``) must interrupt the task, in the main thread.
    start_thread(threading.Thread(target=watch, name="localabort-parent-watch", daemon=True))
