"""Memory limits: sizes as people write them, a task's resident memory, and the watch that samples it.

A task's memory is the resident memory (RSS) of the process that runs it
plus that of every process it started, still running (Linux: read from
``/proc``, about 10 µs a look for a worker without children). While a
task with a limit runs, a thread of its process (``MemoryWatch``) looks
every ``SAMPLE_INTERVAL`` s; a task with no limit costs nothing, and a
process none of whose tasks has had a limit has no such thread.

The watch only looks: what a limit does is its caller's (``over``). In a
worker it sends a message, and the parent asks the task to abort (the soft
limit) or kills the worker's process group (the hard one), as the two time
limits do. Sampling misses what happens between two looks, and a thread
holding the GIL in one long allocation (``b"x" * 10**10``) keeps the watch
from looking at all: so for a task with a hard limit, the process's
address space is capped too (``RLIMIT_AS``, the kernel's own check, made at
every allocation): the task may grow its address space by twice
``memory_limit`` and no more, and an allocation past that fails with ``MemoryError`` at
once. The address space counts more than resident memory (untouched
allocations, thread stacks, mapped files), so that cap is set far enough
above the limit never to act first for a task that stays under it; it is
the backstop that keeps a runaway allocator from taking the machine, not
the limit. A cgroup would count exactly, but needs a delegated cgroup
tree, which a user's process seldom has: not used.

>>> parse_size("512MiB"), parse_size("2GB"), parse_size(1024), parse_size("1.5 KiB")
(536870912, 2000000000, 1024, 1536)
>>> format_size(536870912), format_size(2_000_000_000)
('512 MiB', '1.9 GiB')
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from typing import Any, Callable, List, Optional, Tuple, Union

__all__ = [
    "SAMPLE_INTERVAL", "AddressCap", "MemoryWatch", "TaskMemory", "format_size", "parse_size", "passed", "resident",
]  # fmt: skip

#: Seconds between two looks at the memory of a task with a limit.
SAMPLE_INTERVAL = 0.005

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

Size = Union[int, str]


def parse_size(value: Optional[Size], what: str = "a memory limit") -> Optional[int]:
    """Bytes, from an int or a string such as ``"512MiB"``, ``"2GB"``, ``"800 KB"``; ``None`` stays ``None``.

    Raises ``ValueError`` (one line, naming ``what``) for anything else, or for a size of 0 or less.
    """
    if value is None:
        return None
    if type(value) is str:  # the same few strings at every submit
        return _parse_text(value, what)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} must be a number of bytes or a size such as '512MiB' or '2GB', not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        found = _SIZE.match(value)
        unit = found.group(2).lower() if found else None
        if found is None or unit not in _UNITS:
            raise ValueError(f"{what} must be a number of bytes or a size such as '512MiB' or '2GB', not {value!r}")
        size = int(float(found.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{what} must be more than 0 bytes, not {value!r}")
    return size


@functools.lru_cache(maxsize=64)
def _parse_text(value: str, what: str) -> Optional[int]:
    return parse_size(_Text(value), what)


class _Text(str):
    """A string ``parse_size`` parses instead of looking it up in its cache."""


def passed(used: int, limit: Optional[int], soft: bool) -> str:
    """What a task's memory did, in words the store and the exceptions share.

    >>> passed(242 << 20, 200 << 20, soft=True)
    'used 242 MiB, past its soft_memory_limit of 200 MiB'
    """
    return f"used {format_size(used)}, past its {'soft_memory_limit' if soft else 'memory_limit'} of " \
           f"{format_size(limit or 0)}"  # fmt: skip


def format_size(size: float) -> str:
    """A size for a person: ``512 MiB``, ``1.9 GiB``, ``800 KiB``, ``12 B``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value >= 100 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size:.0f} B"


def resident(pid: Optional[int] = None) -> int:
    """Resident bytes of process ``pid`` (this one by default) and of every process it started, still running."""
    pid = os.getpid() if pid is None else pid
    total, todo = 0, [pid]
    while todo:
        one = todo.pop()
        try:
            with open(f"/proc/{one}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):  # it ended meanwhile
            continue
        todo += _children(one)
    return total


def _children(pid: int) -> List[int]:
    """The processes ``pid`` started (from any of its threads) that still run."""
    found: List[int] = []
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children", "rb") as children:
                found += [int(child) for child in children.read().split()]
    except (OSError, ValueError):  # it ended meanwhile
        pass
    return found


class _Own:
    """This process's resident and virtual size, read through a descriptor kept open: 2 µs a look, not 20."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY | os.O_CLOEXEC)

    def sizes(self) -> Tuple[int, int]:
        """(virtual, resident) bytes of this process alone."""
        fields = os.pread(self._statm, 128, 0).split()
        return int(fields[0]) * _PAGE, int(fields[1]) * _PAGE

    def with_children(self) -> int:
        """Resident bytes of this process and of every process it started, still running."""
        total = self.sizes()[1]
        for child in _children(self.pid):
            total += resident(child)
        return total


class MemoryWatch:
    """A thread that looks at this process's memory while a task with a limit runs; ``over`` decides what to do.

    ``watch(key, soft, hard)`` starts the looks for one task (``key``
    names it to ``over``), ``stop()`` ends them; ``over(key, used, hard)``
    is called once for the soft limit, once for the hard one, from the
    thread. The thread starts with the first task that has a limit, looks
    every ``interval`` s while one runs (the first look one interval after
    the task starts: a task shorter than that is never looked at, and
    costs a lock and a few attributes), and sleeps on an event after a
    second without one.

    >>> seen = []
    >>> w = MemoryWatch(lambda key, used, hard: seen.append((key, hard)))
    >>> w.watch("t1", soft=1, hard=None)
    >>> w.wait_for_a_look()
    >>> w.stop()
    >>> seen
    [('t1', False)]
    """

    def __init__(self, over: Callable[[Any, int, bool], None], interval: float = SAMPLE_INTERVAL) -> None:
        self._over, self._interval = over, interval
        self._lock = threading.Lock()
        self._task: Optional[Tuple[Any, Optional[int], Optional[int]]] = None  # key, soft, hard
        self._wake = threading.Event()
        self._looked = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._own: Optional[_Own] = None

    def watch(self, key: Any, soft: Optional[int], hard: Optional[int]) -> None:
        with self._lock:
            self._task = (key, soft, hard)
        if self._thread is None:
            from ._interrupt import start_thread

            self._own = _Own()
            self._thread = threading.Thread(target=self._run, name="localabort-memory", daemon=True)
            start_thread(self._thread)
        if not self._wake.is_set():
            self._looked.clear()
            self._wake.set()

    def stop(self) -> None:
        """The task ended: no more looks until the next ``watch``."""
        with self._lock:
            self._task = None

    def wait_for_a_look(self, timeout: float = 5.0) -> None:
        """Wait until the thread has looked once (for tests)."""
        self._looked.wait(timeout)

    def _run(self) -> None:
        assert self._own is not None
        idle = 0.0
        while True:
            time.sleep(self._interval)
            with self._lock:
                task = self._task
            if task is None:
                idle += self._interval
                if idle >= 1.0:  # a second without a limited task: sleep until the next
                    self._wake.clear()
                    with self._lock:
                        waiting = self._task is None
                    if waiting:
                        self._wake.wait()
                    idle = 0.0
                continue
            idle = 0.0
            used = self._own.with_children()
            with self._lock:
                if self._task is not task:  # it ended while we looked
                    continue
                key, soft, hard = task
                if soft is not None and used > soft:
                    self._task = (key, None, hard)
                    self._over(key, used, False)
                if hard is not None and used > hard:
                    self._task = None
                    self._over(key, used, True)
            self._looked.set()


class AddressCap:
    """This process's address-space cap (``RLIMIT_AS``) for a task with a hard limit: its size + twice the limit.

    ``begin(hard)`` before each task. The cap stays set
    between tasks with a hard limit and moves only when the wanted one is
    a quarter of the limit away from it, so a stream of tasks with the same
    limit pays one ``pread`` each; a task without one gets the process's
    own limit back. Nothing where the platform has no ``RLIMIT_AS``.

    >>> cap = AddressCap()
    >>> cap.begin(1 << 30); cap.begin(None)
    """

    def __init__(self) -> None:
        try:
            import resource

            self._resource: Any = resource
            self._before = resource.getrlimit(resource.RLIMIT_AS)
        except (ImportError, AttributeError, OSError):  # pragma: no cover - not Linux
            self._resource = None
        self._own: Optional[_Own] = None
        self._cap: Optional[int] = None  # the cap set now, if one is

    def begin(self, hard: Optional[int]) -> None:
        resource = self._resource
        if resource is None:
            return
        if hard is None:
            if self._cap is not None:
                resource.setrlimit(resource.RLIMIT_AS, self._before)
                self._cap = None
            return
        if self._own is None:
            self._own = _Own()
        wanted = self._own.sizes()[0] + 2 * hard  # far enough above: the sampled limit acts first
        if self._before[1] != resource.RLIM_INFINITY:
            wanted = min(wanted, self._before[1])
        if self._cap is None or abs(wanted - self._cap) > hard // 4:
            resource.setrlimit(resource.RLIMIT_AS, (wanted, self._before[1]))
            self._cap = wanted


class TaskMemory:
    """A process's memory limits for the tasks it runs, one at a time: the watch and the cap, made when first needed.

    ``begin(key, soft, hard)`` before a task (``over(key, used, hard)`` is
    the watch's to call), ``end()`` after it. A process none of whose tasks
    had a limit has neither thread nor cap.

    >>> memory = TaskMemory(lambda key, used, hard: None)
    >>> memory.begin("t1", None, None); memory.end(); memory.watch is None
    True
    """

    def __init__(self, over: Callable[[Any, int, bool], None]) -> None:
        self._over = over
        self.watch: Optional[MemoryWatch] = None
        self.cap: Optional[AddressCap] = None

    def begin(self, key: Any, soft: Optional[int], hard: Optional[int]) -> None:
        if soft is None and hard is None:
            if self.cap is not None:
                self.cap.begin(None)
            return
        if self.watch is None or self.cap is None:
            self.watch, self.cap = MemoryWatch(self._over), AddressCap()
        self.cap.begin(hard)
        self.watch.watch(key, soft, hard)

    def end(self) -> None:
        if self.watch is not None:
            self.watch.stop()
