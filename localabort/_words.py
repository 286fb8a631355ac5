"""The abort words: how the parent tells a task in a child that it is aborted.

The problem
-----------
A task calls ``is_aborted()`` in its tightest loop, so a check must cost
well under a microsecond, and an abort must reach it within milliseconds
wherever the task is: in its own code, deep in a library, never between
two jobs. And a worker holds several jobs at once (the one it runs and
those sent ahead of it, so it never waits for the parent between jobs):
when a job sent ahead is aborted, the parent must know at once whether
its worker has started it (then it is asked, like any running task) or not
(then it ends ABORTED now, never runs, and its future completes).

What does not work
------------------
- A message on the worker's pipe: the worker reads its pipe only between
  jobs, and a reader thread in the child would cost every check the GIL.
- A query to the store: hundreds of microseconds a check (Celery's
  abortable does this), so users would have to ration their checks.
- One flag per worker: an abort meant for one job would leak into the next
  job on the same worker, or be cleared before its job saw it.
- Asking the worker whether it started the job sent ahead: it is busy
  running the job before it, and cannot answer until that one ends.

The solution
------------
One shared-memory array of 64-bit words (``allocate``). Each job a worker
holds gets a word of its slot's own (``DEPTH`` per slot, taken in turn),
and each job has a number, ``seq``, never reused in an executor. To abort
job ``seq`` the parent writes ``seq`` into the job's word; the task's
``is_aborted()`` compares the two: one memory read, no lock, no call into
the parent. A stale ``seq`` in a word (an earlier job's) never equals the
current job's, so an abort cannot leak from one job into the next.

The second half of the array holds as many *accept* words. A job sent ahead
is accepted by its worker before it starts: under the slot's *hand-over
lock*, the worker reads the job's abort word and, if it is clear, writes
``seq`` into the job's accept word (``accept``). The parent, taking back a
job sent ahead (``recall``), reads the accept word and writes the abort
word under the same lock. Exactly one of them wins: either the worker
accepted the job first (it runs, and sees the abort at its next check) or
the parent's abort came first (the worker answers the job ABORTED unrun,
and the parent has already ended it).

Lock order. The parent calls ``recall`` holding the scheduler's lock (see
``_scheduler``), so the order is: scheduler lock, then hand-over lock. The
worker takes only the hand-over lock, and holds it for two word accesses.

The hand-over wait. A worker killed while it holds the hand-over lock would
leave the parent waiting for ever. The parent waits ``HANDOVER_WAIT``
seconds at most, then takes the job as accepted: it sets the abort word,
so a job that does run stops at its first check. If the worker is dead, the manager finds out
from its process sentinel, and a job it never reached runs on the
replacement worker, or ends ABORTED unrun if it was aborted.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.synchronize import Lock

    #: The shared array: every slot's abort words, then as many accept words.
    Array = ctypes.Array[ctypes.c_int64]

__all__ = ["DEPTH", "HANDOVER_WAIT", "AbortWords", "allocate"]

#: Jobs a slot holds at most at once (the running one and those sent ahead), so abort words per slot. A
#: worker holds about 5 ms of work ahead (``Scheduler.timed``), this many jobs at most: with 16, a worker of
#: trivial tasks ran out of calls and waited for the parent 87% of the time (10,100 tasks/s on one worker);
#: with 128, 23,000 (1.75 KiB of shared memory more per worker).
DEPTH = 128
#: Seconds the parent waits for a slot's hand-over lock before it takes the job as started.
HANDOVER_WAIT = 1.0


def allocate(ctx: BaseContext, slots: int) -> Array:
    """The shared array for ``slots`` worker slots: their abort words, then as many accept words."""
    return ctx.RawArray(ctypes.c_int64, 2 * slots * DEPTH)


class AbortWords:
    """One slot's abort and accept words and its hand-over lock, seen from the parent or from its worker.

    The parent takes a word for each job it sends (``take``), then aborts
    (``abort``) or takes back (``recall``) that job; the worker accepts a job
    sent ahead (``accept``) and checks for aborts (``is_set``, or the faster
    closure ``probe`` makes). Made in the parent and handed to the worker
    process when it starts; a replacement worker gets a new lock, as its
    predecessor may have died holding the old one.

    >>> import multiprocessing
    >>> ctx = multiprocessing.get_context()
    >>> words = AbortWords(allocate(ctx, 1), 0, ctx.Lock())
    >>> word = words.take()
    >>> words.accept(word, seq=7), words.is_set(word, seq=7)
    (True, False)
    >>> words.abort(word, seq=7)
    >>> words.is_set(word, seq=7), words.is_set(word, seq=8)
    (True, False)
    """

    def __init__(self, array: Array, slot: int, lock: Optional[Lock]) -> None:
        self._array = array
        self._slot = slot
        self._lock = lock
        self._turn = 0
        self._attach()

    def _attach(self) -> None:
        # A memoryview reads and writes a word faster than the ctypes array does.
        self._view = memoryview(self._array).cast("B").cast("q")
        self._accepts = len(self._view) // 2

    def __getstate__(self) -> Dict[str, Any]:  # only while a worker process is spawned
        return {"_array": self._array, "_slot": self._slot, "_lock": self._lock, "_turn": self._turn}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach()

    # -- the parent's side ---------------------------------------------------------

    def take(self) -> int:
        """The word for the next job sent to this slot: the slot's ``DEPTH`` words in turn.

        A slot holds at most ``DEPTH`` jobs at once, so two of them never share a word.
        """
        self._turn = (self._turn + 1) % DEPTH
        return self._slot * DEPTH + self._turn

    def abort(self, word: int, seq: int) -> None:
        """Abort job ``seq``, which holds ``word``: its next ``is_aborted()`` returns ``True``."""
        self._view[word] = seq

    def recall(self, word: int, seq: int) -> bool:
        """Abort job ``seq``, sent ahead; return whether its worker will never start it.

        Not accepted, the worker answers it unrun; accepted, it runs, and sees
        the abort at its next check. Call it with the scheduler's lock held.
        """
        lock = self._lock  # None once released: its worker is gone, and accepts nothing more
        if lock is not None and not lock.acquire(timeout=HANDOVER_WAIT):  # its worker died holding it
            self.abort(word, seq)
            return False
        try:
            accepted = self._view[self._accepts + word] == seq
            self.abort(word, seq)
            return not accepted
        finally:
            if lock is not None:
                lock.release()

    def take_back(self, word: int, seq: int) -> bool:
        """Take back job ``seq``, sent ahead, unless its worker accepted it already; whether it was taken.

        Taken, the worker answers it unrun when it reaches it; accepted, it
        runs, untouched (no abort). For a job to run on another worker
        instead (``Scheduler.unstick``). Call it with the scheduler's lock held.
        """
        lock = self._lock
        if lock is None or not lock.acquire(timeout=HANDOVER_WAIT):  # its worker is gone, or died holding it
            return False
        try:
            if self._view[self._accepts + word] == seq:
                return False
            self.abort(word, seq)
            return True
        finally:
            lock.release()

    def release(self) -> None:
        """Let go of the hand-over lock once the slot's worker is gone: a named semaphore, under spawn and forkserver.

        Its last reference gone, ``multiprocessing`` unlinks it then, and not
        when the executor object is collected: a script that keeps its
        executor after ``shutdown()`` leaks none.
        """
        self._lock = None

    # -- the worker's side ---------------------------------------------------------

    def accept(self, word: int, seq: int) -> bool:
        """Accept job ``seq``, sent ahead, before starting it; ``False`` if the parent aborted it first."""
        assert self._lock is not None  # released only by the parent, once this worker is gone
        with self._lock:
            if self.is_set(word, seq):
                return False
            self._view[self._accepts + word] = seq
            return True

    def is_set(self, word: int, seq: int) -> bool:
        """Whether job ``seq``, holding ``word``, is aborted."""
        return bool(self._view[word] == seq)

    def probe(self, word: int, seq: int) -> Callable[[], bool]:
        """``is_set(word, seq)`` as a closure: what a task's ``is_aborted()`` calls, one memory read."""
        view = self._view

        def probe() -> bool:
            return bool(view[word] == seq)

        return probe
