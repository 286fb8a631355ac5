"""The child side: one worker process, running one task at a time.

The parent sends jobs over the worker's own pipe; the worker runs them in
order and sends back one reply for each, with progress messages before it::

    parent --(seq, flag, ahead, task_id, name, blob, chunked)--> worker
    parent <--("ready", 0)------------------- worker    (once, when it has started)
    parent <--("p", seq, done, total)-------- worker    (throttled, any number)
    parent <--("r", seq, state, blob, tb, progress)--   (exactly one per job)

The parent may send the next job while this one runs, so the worker goes
from one job to the next without waiting for the parent.

The abort flag is not a message: ``flags`` is a shared-memory array of
64-bit words, and the parent aborts job ``seq`` by writing ``seq`` into
the job's word ``flag``. ``is_aborted()`` is one memory read. A job sent
``ahead`` (while the worker ran another) is claimed before it starts: under
the slot's hand-over lock the worker checks its abort word and, if clear,
writes ``seq`` into its claim word (the second half of ``flags``). So the
parent, taking the same lock, knows whether an abort came in time to end
the job without running it; if so, the worker answers it ABORTED unrun.

The worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process
group; the producer alone decides what it means), exits when its pipe
closes, and exits at once if its parent process dies.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from typing import Any, Optional

from ._errors import TaskAborted
from ._states import ABORTED, FAILURE
from ._store import Store
from ._task import AbortableTask, Outcome, execute, execute_chunk, pickle_outcome

__all__ = ["worker_main"]

_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def worker_main(conn: multiprocessing.connection.Connection, flags: Any, handover: Any, store_url: str) -> None:
    """Serve jobs from ``conn`` until it closes or sends the empty message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    words = memoryview(flags).cast("B").cast("q")
    claims = len(words) // 2
    lookup = _Lookup(store_url)
    conn.send_bytes(_dumps(("ready", 0), _PROTOCOL))  # start-up is over: imports done, main module loaded
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        seq, flag, ahead, task_id, name, blob, chunked = pickle.loads(message)
        if ahead and not _claim(words, handover, seq, flag, claims):
            aborted = TaskAborted(f"task {task_id} aborted before it started", task_id=task_id)
            conn.send_bytes(_reply(seq, Outcome(ABORTED, None, aborted), None))
        else:
            conn.send_bytes(_run(conn, words, flag, seq, task_id, name, blob, chunked, lookup))


def _claim(words: Any, handover: Any, seq: int, flag: int, claims: int) -> bool:
    """Claim job ``seq`` sent ahead, unless the parent aborted it first."""
    with handover:
        if words[flag] == seq:
            return False
        words[claims + flag] = seq
        return True


def _run(
    conn: Any, words: Any, flag: int, seq: int, task_id: str, name: str, blob: bytes, chunked: bool, lookup: Any
) -> bytes:
    try:
        target, args, kwargs = pickle.loads(blob)
    except BaseException as exc:
        msg = (
            f"a worker could not load {name} [{task_id}] ({type(exc).__name__}: {exc}); define it at module "
            "level in an importable module: under spawn and forkserver, not in __main__ or in a function"
        )
        return _reply(seq, Outcome(FAILURE, None, RuntimeError(msg)), None)

    def probe() -> bool:
        return bool(words[flag] == seq)

    def report(done: float, total: Optional[float]) -> None:
        conn.send_bytes(_dumps(("p", seq, done, total), _PROTOCOL))

    task: Any = target
    if isinstance(target, type) and issubclass(target, AbortableTask):
        task = target()
        task._bind(task_id, probe, report, lookup, args, kwargs or {})
    try:
        outcome = execute_chunk(task, args) if chunked else execute(task, args, kwargs)
    except BaseException as exc:  # KeyboardInterrupt raised by the task itself
        outcome = Outcome(FAILURE, None, exc)
    progress = getattr(task, "_last_progress", None)
    return _reply(seq, outcome, progress, _name(target))


def _reply(seq: int, outcome: Outcome, progress: Any, name: str = "task") -> bytes:
    (state, _, _, tb), blob = pickle_outcome(outcome, name)
    return _dumps(("r", seq, state, blob, tb, progress), _PROTOCOL)


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", None) or type(target).__name__


class _Lookup:
    """``is_aborted(task_id=...)`` for other tasks: a store read, the store opened on first use."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
        self.store: Optional[Store] = None

    def __call__(self, task_id: str) -> bool:
        if self.store is None:
            self.store = Store.open(self.store_url)
        return self.store.is_abort_requested(task_id)


def _exit_with_parent() -> None:
    """Exit this child as soon as the parent process dies, even mid-task."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set in a multiprocessing child
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="localabort-parent-watch", daemon=True).start()
