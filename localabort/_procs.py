"""Whether a process that registered in the store still runs: its pid, and when it started.

A pid alone is not enough: the system reuses pids, so a store would take a
new process for a dead executor. The start time, from /proc, tells them
apart (where /proc exists; elsewhere the pid alone decides).

A pid means something only in the PID namespace it was read in: two
containers that share a hostname (and a store) see each other's pids as
dead. ``pid_namespace`` names this process's namespace, on any machine:
where a reader's is the executor's, a pid that does not run is proof of
death. Elsewhere a live executor's writes tell: it writes to its store at
least every ``HEARTBEAT`` seconds, and one silent for ``SILENT`` seconds
is hung, or dead, and readers stop waiting for it.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import List, NamedTuple, Optional

__all__ = [
    "HEARTBEAT", "REMOTE_SILENT", "SILENT", "Registered", "alive", "asker", "exit_words", "flushed", "gone",
    "pid_namespace", "process_start",
]  # fmt: skip

#: Seconds between an executor's writes of ``flushed_at`` when it has nothing else to write.
HEARTBEAT = 0.5
#: Seconds an executor may be silent before a lookup stops waiting for it (hung, or dead on another host).
SILENT = 5.0
#: Seconds an executor on another host may be silent before its tasks are ended as lost: its pid cannot be
#: asked, so silence alone decides, with a margin for a busy host and for two clocks that differ.
REMOTE_SILENT = 30.0


def _stat(pid: int) -> Optional[List[bytes]]:
    """The fields of /proc/PID/stat after the process name (state first), or ``None`` off Linux or if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (clock ticks since boot, from /proc), or ``None`` off Linux."""
    fields = _stat(pid)
    return None if fields is None or len(fields) < 20 else fields[19].decode()


def pid_namespace() -> Optional[str]:
    """This process's PID namespace, unlike any other on any machine; ``None`` where /proc cannot say.

    The namespace's inode alone repeats across machines (every host's
    first namespace has the same one); the kernel's boot id, which the
    containers of one machine share, tells the machines apart.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def alive(pid: int, started: Optional[str]) -> bool:
    """Whether the process that registered as ``pid`` (started at ``started``) still runs.

    A zombie (dead, not yet reaped by its parent) does not.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: the pid alone decides
    if fields[0] in (b"Z", b"X"):
        return False
    return started is None or len(fields) < 20 or fields[19].decode() == started


class Registered(NamedTuple):
    """What ``gone`` reads of an executor's row in the store (``localabort_executors``), in its columns' names."""

    hostname: Optional[str]
    pid: int
    process_start: Optional[str]
    pid_namespace: Optional[str]
    flushed_at: Optional[float]
    started_at: Optional[float]


def flushed(row: Registered) -> float:
    """When the executor of ``row`` last wrote (or registered)."""
    return float(row.flushed_at if row.flushed_at is not None else row.started_at or 0.0)


def gone(row: Registered, host: str, here: Optional[str], now: float) -> bool:
    """Whether the executor of ``row`` is dead, to a reader on ``host`` in PID namespace ``here`` (``_registry``).

    >>> import time
    >>> me = Registered("elsewhere", os.getpid(), None, pid_namespace(), time.time(), None)
    >>> gone(me, socket.gethostname(), pid_namespace(), time.time())
    False
    """
    if here is not None and row.pid_namespace == here:  # its pid is one of ours: whether it runs is proof
        return not alive(row.pid, row.process_start)
    if row.hostname == host:
        return now - flushed(row) > SILENT and not alive(row.pid, row.process_start)
    return now - flushed(row) > REMOTE_SILENT


def asker(what: str = "") -> str:
    """Who asks for an abort, in words: ``what`` (a call, a command), then this process, by pid and host."""
    me = f"pid {os.getpid()} on {socket.gethostname()}"
    return f"{what} ({me})" if what else me


def exit_words(code: Optional[int]) -> str:
    """How a child process with exit status ``code`` (``Process.exitcode``) ended, in words.

    >>> exit_words(-9), exit_words(3), exit_words(None)
    ('was killed by SIGKILL', 'exited with status 3', 'is still running')
    """
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
