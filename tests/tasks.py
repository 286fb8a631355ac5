"""Tasks the tests run in real children; importable, so every start method can load them."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

from localabort import AbortableTask, TaskAborted, checkpoint, current_task, is_aborted


class Crunch(AbortableTask):
    """The README's example: squares, until aborted."""

    def run(self, n):
        done = []
        for i in range(n):
            if self.is_aborted():
                return done
            done.append(i * i)
            self.progress(i + 1, n)
        return done


class Spin(AbortableTask):
    """Checks for abort and reports progress until aborted (or ``limit`` rounds)."""

    def run(self, limit=None):
        i = 0
        while not self.is_aborted():
            i += 1
            self.progress(i)
            if limit is not None and i >= limit:
                break
        return i


class WaitForFile(AbortableTask):
    """Never checks for abort: reports progress, then waits for ``path`` to exist."""

    def run(self, path):
        self.progress(1, 2)
        while not Path(path).exists():
            time.sleep(0.001)
        return "returned without checking"


class Fail(AbortableTask):
    def run(self, message):
        raise ValueError(message)


def _deep(level):
    if level:
        return _deep(level - 1)
    checkpoint()
    return is_aborted()


class DeepCheckpoint(AbortableTask):
    """Checks only through the module-level helpers, from deep in the stack."""

    def run(self):
        while True:
            _deep(20)
            self.progress(1)


class RaiseAborted(AbortableTask):
    def run(self):
        raise TaskAborted("gave up on my own")


class Die(AbortableTask):
    """Ends its own process: ``how`` is "exit", "kill" or "segfault"."""

    def run(self, how):
        if how == "exit":
            os._exit(3)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        faulthandler.disable()  # the test runner's handler would print this child's stack
        ctypes.string_at(0)


class Unpicklable(AbortableTask):
    def run(self):
        return lambda: None


class OtherAborted(AbortableTask):
    def run(self, other_id):
        return self.is_aborted(task_id=other_id)


class WhoAmI(AbortableTask):
    def run(self):
        task = current_task()
        return task is self, self.task_id, self.request.id, self.request.args


class Sleepy(AbortableTask):
    def run(self, seconds):
        time.sleep(seconds)
        return seconds


def add(a, b):
    return a + b


def plain_wait_for_file(path):
    while not Path(path).exists():
        time.sleep(0.001)
    return "plain done"


def outside_helpers():
    """A plain callable: the module-level helpers are harmless outside a task."""
    checkpoint()
    return current_task(), is_aborted()


class Ticker(AbortableTask):
    """Checks for abort every 10 ms, for up to ``seconds``."""

    def run(self, seconds=30.0):
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            if self.is_aborted():
                return i
            i += 1
            self.progress(i)
            time.sleep(0.01)
        return i


class Deaf(AbortableTask):
    """Never checks for abort: sleeps for ``seconds``, reporting progress."""

    def run(self, seconds=30.0):
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            i += 1
            self.progress(i)
            time.sleep(0.01)
        return i


class Limited(Spin):
    soft_time_limit = 0.3


class HardLimited(Deaf):
    time_limit = 0.5


def big_bytes(megabytes):
    return b"x" * (megabytes * 2**20)


def touch(path):
    """A plain callable with a side effect a test can look for."""
    Path(path).touch()
    return path


def touch_soon(path, seconds):
    """``touch``, after ``seconds``: a quick task whose run leaves a trace, and which never checks for aborts."""
    time.sleep(seconds)
    Path(path).touch()
    return path


class KilledOnFile(AbortableTask):
    """Reports progress, then SIGKILLs its own worker once ``path`` exists."""

    def run(self, path):
        self.progress(1)
        while not Path(path).exists():
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)


class Touch(AbortableTask):
    """Creates ``path``: a side effect a test can look for."""

    def run(self, path):
        Path(path).touch()
        return path


class DelayInside(AbortableTask):
    """Calls ``delay()`` from inside a worker, where no executor is active; returns the error's text."""

    def run(self):
        try:
            Crunch.delay(1)
        except RuntimeError as exc:
            return str(exc)
        return "submitted"


def die_now():
    """A plain callable that kills its own worker."""
    os.kill(os.getpid(), signal.SIGKILL)


def return_zero():
    return 0


_initialized = None


def remember(value):
    """An executor initializer: what every task of that worker sees."""
    global _initialized
    _initialized = value


def remembered():
    return _initialized, os.getpid()


def refuse_to_start():
    """An executor initializer that fails."""
    raise ValueError("no connection to the database")


class Box:
    """A plain object a test can take a weak reference to."""

    def __init__(self, value=None):
        self.value = value


class ExitWhenUnpickled:
    """A result that pickles fine in the worker, and raises SystemExit when the parent unpickles it."""

    def __reduce__(self):
        return sys.exit, (3,)


def _interrupt():
    raise KeyboardInterrupt


def _cancel():
    import asyncio

    raise asyncio.CancelledError  # a BaseException since Python 3.8


class CancelWhenUnpickled:
    """A result whose unpickling in the parent raises asyncio's CancelledError."""

    def __reduce__(self):
        return _cancel, ()


class InterruptWhenUnpickled:
    """A result whose unpickling in the parent raises KeyboardInterrupt (in the executor's manager thread)."""

    def __reduce__(self):
        return _interrupt, ()


class ExitWhenPickled:
    """A result whose pickling raises SystemExit in the worker."""

    def __reduce__(self):
        sys.exit(4)


def make(cls_name):
    return globals()[cls_name]()


class Ledger(AbortableTask):
    """Appends a line to ``ledger`` each time it runs, then waits for ``go`` (if given) and returns ``value``."""

    def run(self, ledger, value, go=None):
        with open(ledger, "a") as f:
            f.write(f"{os.getpid()}\n")
        while go is not None and not os.path.exists(go):
            if self.is_aborted():
                return None
            time.sleep(0.005)
        return value


class KeepsALock(AbortableTask):
    """Reports 3 of 10, waits for its abort, and returns what cannot be pickled: a lock."""

    def run(self):
        import threading

        self.progress(3, 10)
        while not self.is_aborted():
            time.sleep(0.005)
        return threading.Lock()


def _note(ledger):
    if ledger is not None:
        with open(ledger, "a") as f:
            f.write(f"{time.time()!r}\n")


class Flaky(AbortableTask):
    """Appends to ``ledger`` and fails with ``ConnectionError`` until attempt ``succeed_on`` (0-based)."""

    autoretry_for = (ConnectionError,)
    max_retries = None
    default_retry_delay = 0.05

    def run(self, succeed_on=2, ledger=None):
        _note(ledger)
        if self.request.retries < succeed_on:
            raise ConnectionError(f"attempt {self.request.retries} failed")
        return self.request.retries


class RetryBySelf(AbortableTask):
    """``raise self.retry(...)`` on an ``OSError``, at most twice."""

    max_retries = 2

    def run(self, countdown=0.05, ledger=None):
        _note(ledger)
        try:
            raise OSError("busy")
        except OSError as exc:
            raise self.retry(exc=exc, countdown=countdown) from None


class FlakyAfterFile(AbortableTask):
    """Appends to ``ledger``, waits for ``path`` without checking for an abort, then fails to be retried."""

    autoretry_for = (ConnectionError,)
    default_retry_delay = 0.05

    def run(self, path, ledger=None):
        _note(ledger)
        self.progress(1, 2)
        while not Path(path).exists():
            time.sleep(0.001)
        raise ConnectionError("reset after the file came")


_KEPT = []


class Parent(AbortableTask):
    """Starts a child process that sleeps for minutes, writes its pid to ``path``, then ``then``.

    ``how``: "fork" (``os.fork``), "pool" (a fork ``multiprocessing.Pool`` of 2, both pids) or
    "subprocess" (``sleep``). ``then``: "spin" (runs ``seconds`` without checking for aborts) or
    "return" (returns at once, leaving the child behind).
    """

    def run(self, path, how="fork", then="spin", seconds=60.0):
        if how == "fork":
            pid = os.fork()
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            pids = [pid]
        elif how == "pool":
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(2)
            _KEPT.append(pool)  # as long as the worker lives: dropped, a pool terminates its processes
            pids = [p.pid for p in pool._pool]
        else:
            import subprocess

            pids = [subprocess.Popen(["sleep", "600"]).pid]
        Path(path).write_text(" ".join(map(str, pids)))
        if then == "return":
            return pids
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return pids


class Steps(AbortableTask):
    """``n`` steps of ``pause`` seconds, each reported as progress out of ``n``; stops when aborted."""

    def run(self, n=1000, pause=0.02):
        for i in range(n):
            if self.is_aborted():
                return i
            time.sleep(pause)
            self.progress(i + 1, n)
        return n


def blocked_in(status):
    """The signals blocked by the thread or process of this ``/proc`` status file."""
    with open(status) as f:
        mask = int(next(line.split()[1] for line in f if line.startswith("SigBlk:")), 16)
    return {sig for sig in signal.valid_signals() if mask >> (sig - 1) & 1}


def blocked_signals():
    """The signals blocked by this worker's main thread and by its parent-watch thread, as read from ``/proc``."""
    import threading

    (watch,) = [t for t in threading.enumerate() if t.name == "localabort-parent-watch"]
    return (blocked_in(f"/proc/self/task/{threading.get_native_id()}/status"),
            blocked_in(f"/proc/self/task/{watch.native_id}/status"))  # fmt: skip


class AsyncAdd(AbortableTask):
    """An ``async def run`` that awaits, then returns."""

    async def run(self, a, b):
        import asyncio

        await asyncio.sleep(0.001)
        return a + b


class AsyncSleeper(AbortableTask):
    """Reports progress, then sleeps an hour in an ``await``: only a cancellation ends it early."""

    async def run(self):
        import asyncio

        self.progress(1)
        await asyncio.sleep(3600)
        return "slept"


class AsyncCatcher(AbortableTask):
    """Catches the cancellation an abort brings and returns what it has: a partial result."""

    async def run(self):
        import asyncio

        self.progress(1)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "partial"
        return "slept"


def install_uvloop():
    """An executor initializer: the worker's new event loops are uvloop's."""
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class AsyncLoopKind(AbortableTask):
    """Returns the class name of the event loop its ``async def run`` runs in, after a long await if asked."""

    async def run(self, sleep=0.0):
        import asyncio

        self.progress(1)
        try:
            await asyncio.sleep(sleep)
        except asyncio.CancelledError:
            return type(asyncio.get_running_loop()).__name__
        return type(asyncio.get_running_loop()).__name__


class AsyncChecker(AbortableTask):
    """Loops on ``is_aborted()`` with awaits between, reporting progress: an abort ends the loop."""

    async def run(self):
        import asyncio

        i = 0
        while not self.is_aborted():
            i += 1
            self.progress(i)
            await asyncio.sleep(0.001)
        return i


class Chatty(AbortableTask):
    """Prints, writes to stderr and logs ``n`` lines each, from its own thread too; returns ``n``."""

    def run(self, n, every=0.0):
        import logging
        import threading

        log = logging.getLogger("tests.chatty")
        for i in range(n):
            print(f"out {i}")
            print(f"err {i}", file=sys.stderr)
            log.warning("record %d of %s", i, self.task_id)
            if every:
                time.sleep(every)
        helper = threading.Thread(target=print, args=("from a thread",))
        helper.start()
        helper.join()
        return n


def print_bytes(size, line=80):
    """Print ``size`` bytes in lines of ``line`` (a single line if ``line`` is 0), numbered at the end."""
    if not line:
        print("x" * (size - 4) + "END")
        return size
    for i in range(size // line):
        print(f"{i:0{line - 1}d}")
    return size


def print_then_close():
    """Print, close ``sys.stdout``, and say what printing then raised."""
    print("before")
    sys.stdout.close()
    try:
        print("after")
    except ValueError as exc:
        return str(exc)
    return "printed"


def hostile_text():
    """Print an escape sequence, a bidi override and a lone surrogate (a file name's undecodable byte)."""
    print("\x1b[31mred\x1b[0m \u202eevil\u202c " + b"caf\xe9".decode("utf-8", "surrogateescape"))
    return True


def print_in_fork():
    """Fork a child that prints; wait for it; print after."""
    pid = os.fork()
    if pid == 0:
        print("from the forked child", flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print("after the fork")
    return True


def use(megabytes, cpu_seconds=0.0, child_cpu_seconds=0.0):
    """Hold ``megabytes`` of touched memory, spin ``cpu_seconds``, and run a child that spins ``child_cpu_seconds``."""
    import subprocess

    held = bytearray(megabytes * 2**20)
    held[::4096] = b"x" * len(held[::4096])
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass
    if child_cpu_seconds:
        code = f"import time\nend = time.process_time() + {child_cpu_seconds}\nwhile time.process_time() < end: pass"
        subprocess.run([sys.executable, "-c", code], check=True)
    return len(held)


def log_records(n):
    """Log ``n`` WARNING records on ``tests.chatty`` (and print nothing: the records alone reach stderr)."""
    import logging

    for i in range(n):
        logging.getLogger("tests.chatty").warning("record %d", i)
    return n


# -- memory ------------------------------------------------------------------------

MB = 1 << 20


class Grow(AbortableTask):
    """Takes ``step`` MB more every ``every`` s, up to ``upto`` MB, checking for an abort between; returns MB held."""

    def run(self, step=20, every=0.01, upto=4000):
        held = []
        while len(held) * step < upto:
            if self.is_aborted():
                return len(held) * step
            held.append(b"\x01" * (step * MB))  # written: resident, not just reserved
            self.progress(len(held) * step, upto)
            time.sleep(every)
        return len(held) * step


class GrowDeaf(AbortableTask):
    """``Grow`` that never checks: only its worker's death stops it."""

    def run(self, step=20, every=0.01, upto=4000):
        held = []
        while len(held) * step < upto:
            held.append(b"\x01" * (step * MB))
            time.sleep(every)
        return len(held) * step


class GrowAtOnce(AbortableTask):
    """Asks for ``megabytes`` in one allocation, holding the GIL throughout: no sampling thread can look meanwhile."""

    def run(self, megabytes):
        return len(b"\x01" * (megabytes * MB))


class ChildGrows(AbortableTask):
    """Starts a process that takes ``megabytes`` and sleeps; waits for it, checking for an abort; its pid first."""

    def run(self, megabytes, pid_file):
        import subprocess

        child = subprocess.Popen([sys.executable, "-c", f"import time; x = b'1' * ({megabytes} << 20); time.sleep(60)"])
        Path(pid_file).write_text(str(child.pid))
        try:
            while child.poll() is None:
                if self.is_aborted():
                    return "stopped"
                time.sleep(0.01)
        finally:
            child.kill()
            child.wait()
        return "child ended"


class Spiky(AbortableTask):
    """Takes ``megabytes`` and lets it go, ``times`` times: always under its limits, it is left alone."""

    def run(self, megabytes, times=3):
        for _ in range(times):
            block = b"\x01" * (megabytes * MB)
            time.sleep(0.05)
            del block
        return times


_HOARD = []


def hoard(megabytes):
    """Keeps ``megabytes`` in this worker for good (a leak), and returns its pid."""
    _HOARD.append(b"\x01" * (megabytes * MB))
    return os.getpid()


def pid_after(seconds=0.0):
    time.sleep(seconds)
    return os.getpid()


class LimitedGrower(GrowDeaf):
    """``GrowDeaf`` with its limit as a class attribute."""

    memory_limit = "200MiB"


class BadLimit(AbortableTask):
    memory_limit = "a lot"

    def run(self):
        return 0


def thread_names():
    import threading

    return sorted(t.name for t in threading.enumerate())


class CelerySoftMemory(Grow):
    """``Grow`` with a soft memory limit, for a Celery worker."""

    soft_memory_limit = "150MiB"


class CeleryHardMemory(GrowDeaf):
    """``GrowDeaf`` with a hard memory limit, for a Celery worker."""

    memory_limit = "200MiB"


def rss():
    """This worker's resident memory, with its children's (under fork it counts what it shares with its parent)."""
    from localabort._memory import resident

    return resident()
