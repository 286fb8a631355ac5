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
- Each Ctrl-C says, in one line on stderr, what it does and what the next
  one would do.
- A Ctrl-C can also land in the middle of an executor call the main thread
  makes (``abort()`` in a loop, ``abort_all()``, a store write): every job
  a user thread ends is owed to the manager's next write as well, so its
  row is stored even when that thread's own write never happens
  (``Scheduler._settle``); and a change of several jobs' states under
  the scheduler's lock holds a Ctrl-C back until it is whole
  (``deferred``), so no job is left half aborted.
- The kernel hands a signal sent to the process to any one of its threads
  that does not block it, and Python runs the handler in the main thread
  only, at its next bytecode. A Ctrl-C that lands on one of our threads
  does not wake the main thread from the wait it is blocked in
  (``result()``, ``as_completed()``): it is seen only when that wait ends
  on its own, minutes later for long tasks, as if Ctrl-C were ignored
  (one Ctrl-C in about 35, under load). So every thread localabort starts
  blocks those signals (``start_thread``): each one reaches the main
  thread, and so do SIGALRM (``signal.alarm``, pytest-timeout) and
  SIGTERM (a service manager). One Ctrl-C in about 500 is still missed,
  most likely in CPython's own window: a signal handled just before the
  main thread blocks in a lock. A mask is inherited by the processes a
  thread starts, so user code run on our threads, a future's
  done-callbacks, runs with the mask its starter had (``user_signals``),
  and a worker sets its own mask as it starts, whichever thread started it.
- Either way the ``KeyboardInterrupt`` is re-raised, so the script exits
  as an interrupted script does (killed by SIGINT, status 130 in a shell).
- SIGTERM (a service manager's stop, ``kill``) and SIGHUP (a closed
  terminal) would kill the script at once, its tasks recorded only by a
  later recovery, as FAILURE. While an executor has work, they act as
  Ctrl-C instead: the handler ``stop_on_signals`` installs raises
  ``KeyboardInterrupt("SIGTERM")`` in the main thread, and a second one
  terminates. With no work, it does what the default would: the script
  dies of that signal. It is installed only where the default was (a
  user's handler is left alone). Workers ignore SIGHUP, as they ignore
  SIGINT, and die of SIGTERM: that is how ``terminate_workers`` stops them.
- A ``KeyboardInterrupt`` can land between two bytecodes of
  ``concurrent.futures``' own code: inside ``wait()`` or ``as_completed()``
  after it has taken some futures' locks and before the ``with`` block that
  releases them has begun. The main thread then holds those locks for
  good, and the manager thread, completing those futures, would wait for
  them for ever. So before it stops, the main thread lets go of any
  future's lock it still holds (``release_leaked``): nothing of its own is
  inside such a lock any more. The same goes for the locks of the waiters
  ``wait()`` and ``as_completed()`` install on the futures: ``wait()``
  leaves its waiter installed when interrupted, and the manager calls it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

try:  # the C functions ``signal`` wraps, which convert every signal number and handler to an enum: a
    # twentieth of the cost for a handler, a fortieth for a full mask (61 µs). No stubs: typed as ``signal``'s.
    from _signal import getsignal as _getsignal  # type: ignore[import-not-found,unused-ignore]
    from _signal import pthread_sigmask as _sigmask  # type: ignore[import-not-found,unused-ignore]
    from _signal import signal as _setsignal  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - not CPython
    _getsignal, _setsignal, _sigmask = signal.getsignal, signal.signal, signal.pthread_sigmask

#: Seconds a waiter's lock may stay held before ``release_leaked`` takes it for leaked by an interrupted wait.
LEAK_WAIT = 0.05

#: Signals that stop a batch as Ctrl-C does while an executor has work: a service manager's stop, a closed terminal.
GRACEFUL = (signal.SIGTERM, signal.SIGHUP)
_HOLDABLE = (signal.SIGINT, *GRACEFUL)  # what ``deferred`` holds back

#: Signals a fault raises in the thread at fault: never blocked (the kernel would kill the process unreported).
_FAULTS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT}
)
_BLOCKED = frozenset(signal.valid_signals() - _FAULTS)  # what our threads block (``start_thread``)

__all__ = [
    "GRACEFUL",
    "deferred",
    "keep_exiting_as_interrupted",
    "release_leaked",
    "say",
    "start_thread",
    "stop_on_interrupt",
    "stop_on_signals",
    "user_signals",
]


def start_thread(thread: threading.Thread) -> None:
    """Start ``thread`` blocking every signal sent to the process: they are the main thread's (see above).

    A thread or a process it starts inherits the mask; ``user_signals``
    lifts it around user code. The caller blocks them too while the thread
    starts, since the thread inherits the caller's mask.

    >>> blocked = []
    >>> thread = threading.Thread(target=lambda: blocked.extend(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    >>> start_thread(thread); thread.join()
    >>> signal.SIGINT in blocked, signal.SIGSEGV in blocked
    (True, False)
    """
    mask = _sigmask(signal.SIG_BLOCK, _BLOCKED)
    thread._localabort_mask = mask  # type: ignore[attr-defined]  # its starter's, for ``user_signals``
    try:
        thread.start()
    finally:
        _sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def user_signals() -> Iterator[None]:
    """Around user code on a thread ``start_thread`` started: the mask its starter had, as a process it starts expects.

    A done-callback that starts a process (``subprocess``, a pool) would
    otherwise give it every signal blocked: it would not die of
    ``terminate()``'s SIGTERM. On any other thread, nothing changes.
    """
    mask = getattr(threading.current_thread(), "_localabort_mask", None)
    if mask is None:
        yield
        return
    ours = _sigmask(signal.SIG_SETMASK, mask)  # around every done-callback the manager runs
    try:
        yield
    finally:
        _sigmask(signal.SIG_SETMASK, ours)


def stop_on_interrupt(
    abort_all: Callable[[str], Tuple[int, int]], wait: Callable[[], None], terminate: Callable[[], int]
) -> None:
    """The first Ctrl-C: abort everything and wait; a second one during the wait: terminate.

    Each says on stderr what it does, in one line, as a Celery worker does.
    ``abort_all`` returns how many tasks it asked and how many still run;
    ``terminate`` returns how many it kills.
    """
    handler = _installed()
    received = handler.received if handler is not None else None
    cause, again = ("Ctrl-C", "press Ctrl-C") if received is None else (received, f"send {received} or press Ctrl-C")
    try:
        asked, running = abort_all(cause)
        prefix = "" if received is None else f"{received}: "
        if running:
            say(f"{prefix}aborting {_tasks(asked)}; {running} still running; {again} again to terminate them")
        elif asked:
            say(f"{prefix}aborted {_tasks(asked)} not started")
        wait()
    except KeyboardInterrupt:
        say(f"terminating {_tasks(terminate())}")
    finally:
        if handler is not None:
            handler.received = None


class _Graceful:
    """The handler of ``GRACEFUL`` signals (see above): a Ctrl-C while ``busy()``, else the signal's default."""

    def __init__(self, busy: Callable[[], bool]) -> None:
        self.busy = busy
        self.received: Optional[str] = None  # the name of the signal it turned into a KeyboardInterrupt

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is None and not self.busy():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # as if no handler were installed: the script dies of it
            return
        self.received = self.received or name
        raise KeyboardInterrupt(name)


def stop_on_signals(busy: Callable[[], bool]) -> None:
    """Make SIGTERM and SIGHUP stop the main thread as Ctrl-C does while ``busy()`` (see above).

    Only from the main thread, and only for a signal whose handler is the default.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handler = _installed() or _Graceful(busy)
    for signum in GRACEFUL:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, handler)


def _installed() -> Optional[_Graceful]:
    """The handler ``stop_on_signals`` installed, for SIGTERM or SIGHUP (the same one for both), if it did."""
    return next((h for h in map(signal.getsignal, GRACEFUL) if isinstance(h, _Graceful)), None)


def say(line: str) -> None:
    """Print ``line`` to stderr as localabort's own, above any progress bars drawn there."""
    bars = sys.modules.get("tqdm")  # loaded only if some bars are drawn (``progress``)
    try:
        if bars is not None:
            bars.tqdm.write(f"localabort: {line}", file=sys.stderr)
        else:
            print(f"localabort: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a terminal gone (SIGHUP), a closed stderr: the stop goes on unsaid
        pass


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


class deferred:
    """Hold a Ctrl-C back until the block ends, then raise it: for state changes that must not stop half done.

    Only in the main thread (the only one Python raises ``KeyboardInterrupt``
    in), and only for a signal whose handler raises it: Python's own for
    SIGINT, ``stop_on_signals``' for SIGTERM and SIGHUP. A user's handler is
    left alone. On the path of every ``abort()``: it swaps handlers through
    ``_signal``, whose calls take 0.1 µs where ``signal``'s take 2 (they
    convert each handler to an enum, and fail to, for a function). A fresh
    one for each block.

    A swap first runs the handlers of signals already pending, and one that
    raises leaves its swap undone: a Ctrl-C pending as the block begins is
    raised before it, every handler back; one pending as it ends, held
    with the others, after every handler is back.

    >>> with deferred():
    ...     pass
    """

    __slots__ = ("_caught", "_held")

    def __enter__(self) -> None:
        self._held: Dict[int, Any] = {}
        self._caught: List[BaseException] = []
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            for signum in _HOLDABLE:
                handler = _getsignal(signum)
                if handler is signal.default_int_handler or isinstance(handler, _Graceful):
                    self._held[signum] = handler  # first: ``_hold`` may run the moment it is in place
                    try:
                        _setsignal(signum, self._hold)
                    except BaseException:  # a pending signal's handler raised: this one was not swapped
                        del self._held[signum]
                        raise
        except BaseException:
            self._restore()
            raise

    def _hold(self, signum: int, frame: Any) -> None:
        try:
            self._held[signum](signum, frame)
        except KeyboardInterrupt as exc:
            self._caught.append(exc)

    def _restore(self) -> None:
        for number, previous in self._held.items():
            while True:  # until it is back: a pending signal whose handler is back already may raise first
                try:
                    _setsignal(number, previous)
                    break
                except BaseException as exc:
                    self._caught.append(exc)

    def __exit__(self, *exc_info: Any) -> None:
        self._restore()
        if self._caught:
            raise self._caught[0]


def release_leaked(futures: Iterable[Any]) -> None:
    """Release every lock of ``futures``, and of their waiters, this thread still holds after a Ctrl-C (see above).

    A future's condition is an ``RLock``, whose owner is known. The waiters
    that ``wait()`` and ``as_completed()`` install on futures hold plain
    locks, whose owner is not: such a lock still held after
    ``LEAK_WAIT`` is taken for leaked (the manager, completing a future,
    holds one for microseconds), and released. The event's lock goes
    first, as the manager may hold the waiter's own lock while it waits for
    the event's.
    """
    waiters: Dict[int, Any] = {}
    for future in futures:
        # An executor's future makes its condition when first needed (``_made``): none made, none held.
        condition = future._made if hasattr(future, "_made") else future._condition
        while condition is not None and condition._is_owned():
            condition.release()
        waiters.update((id(waiter), waiter) for waiter in list(future._waiters))
    for waiter in waiters.values():
        for lock in (waiter.event._cond._lock, getattr(waiter, "lock", None)):
            if lock is not None and lock.acquire(timeout=LEAK_WAIT):
                lock.release()  # free: not leaked
            elif lock is not None:
                lock.release()


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
    import ctypes  # not at the top: workers import this module, and ctypes takes milliseconds

    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 1
    except (AttributeError, ValueError):  # pragma: no cover - a Python built without the symbol exported
        pass
