"""Ctrl-C: what a KeyboardInterrupt means to an executor, and how it stops.

The problem
-----------
A terminal's Ctrl-C sends SIGINT to every process in the foreground
process group: the script *and* its worker processes. Python turns it into
``KeyboardInterrupt`` wherever each process happens to be. Left alone,
every worker prints a traceback from the middle of a task and dies, the
tasks' states are whatever was last written (STARTED, for ever), and the
script's own exit may wait for tasks that nobody will finish.

What does not work
------------------
- Catching ``KeyboardInterrupt`` in the workers, as ``ProcessPoolExecutor``
  does: the exception lands at an arbitrary point of the task, which then
  cannot stop cleanly, and a SIGINT sent to the script alone (``kill
  -INT``) never reaches the workers at all.
- Waiting for the tasks in ``__exit__``, as ``pebble`` does: a 10-minute
  task makes Ctrl-C take 10 minutes.
- Killing the workers at once, as ``multiprocessing.Pool`` does: the tasks
  lose their work and their chance to say how far they got.
- Doing the work in a signal handler: a handler runs between two bytecodes
  of whatever the main thread was doing, perhaps holding the executor's
  lock. Handlers may only set flags.

The solution
------------
- Workers ignore SIGINT (``_worker``): the producer alone decides, whether
  the signal went to the whole group or only to the script.
- The script's main thread gets Python's ordinary ``KeyboardInterrupt``,
  from no handler of ours. When it reaches ``Executor.__exit__``, we ask
  for a graceful stop: every task not started ends ABORTED at once, every
  running task is asked to abort (a shared-memory write, seen at its next
  check), and we wait for them.
- A second Ctrl-C during that wait terminates the workers; their tasks end
  ABORTED in the store.
- Either way the ``KeyboardInterrupt`` is re-raised, so the script exits
  as an interrupted script does (killed by SIGINT, status 130 in a shell).
- A ``KeyboardInterrupt`` can land between two bytecodes of
  ``concurrent.futures``' own code: inside ``wait()`` or ``as_completed()``
  after it has taken some futures' locks and before the ``with`` block that
  releases them has begun. The main thread then holds those locks for
  good, and the manager thread, completing those futures, would wait for
  them for ever. So before it stops, the main thread lets go of any
  future's lock it still holds (``release_leaked``): nothing of its own is
  inside such a lock any more.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Callable, Iterable

__all__ = ["keep_exiting_as_interrupted", "release_leaked", "stop_on_interrupt"]


def stop_on_interrupt(abort_all: Callable[[], int], wait: Callable[[], None], terminate: Callable[[], None]) -> None:
    """The first Ctrl-C: abort everything and wait; a second one during the wait: terminate."""
    try:
        abort_all()
        wait()
    except KeyboardInterrupt:
        terminate()


def release_leaked(futures: Iterable[Any]) -> None:
    """Release every lock of ``futures`` this thread still holds after a Ctrl-C (see above)."""
    for future in futures:
        condition = future._condition
        while condition._is_owned():
            condition.release()


def keep_exiting_as_interrupted() -> None:
    """After work at the interpreter's exit, let a script that died of Ctrl-C still exit as interrupted.

    Up to Python 3.10, any ``exec`` of source run during the exit (SQLAlchemy
    compiles a statement that way, say) clears CPython's record that the
    script died of an unhandled ``KeyboardInterrupt``, and the script then
    exits with status 1 instead of being killed by SIGINT (130 in a shell).
    Python 3.11 keeps the record; before it, this sets it again.
    """
    if sys.version_info >= (3, 11):
        return
    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 1
    except (AttributeError, ValueError):  # pragma: no cover - a Python built without the symbol exported
        pass
