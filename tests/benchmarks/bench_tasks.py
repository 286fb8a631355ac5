"""Tasks the benchmarks run; importable, so any start method can load them."""

from __future__ import annotations

import os
import time

from localabort import AbortableTask


def identity(x):
    return x


def sleep_1ms(x):
    time.sleep(0.001)
    return x


def sleep_1ms_or_long(x):
    """``sleep_1ms``, except for ``x == LONG_AT``: that one sleeps ``LONG_SECONDS`` (a long task among short ones)."""
    time.sleep(LONG_SECONDS if x == LONG_AT else 0.001)
    return x


LONG_AT, LONG_SECONDS = 50, 0.5


def sleep_1ms_timed(x):
    """``sleep_1ms`` that says when it ran: ``(pid, start, end)`` in ``time.perf_counter`` seconds."""
    start = time.perf_counter()
    time.sleep(0.001)
    return os.getpid(), start, time.perf_counter()


class Noop(AbortableTask):
    """The trivial task as a class: returns its argument."""

    def run(self, x):
        return x


class CheckCost(AbortableTask):
    """Times ``n`` calls of ``is_aborted()`` in a loop; returns seconds per call (loop included)."""

    def run(self, n):
        is_aborted = self.is_aborted
        start = time.perf_counter()
        for _ in range(n):
            is_aborted()
        return (time.perf_counter() - start) / n


class SeeAbort(AbortableTask):
    """Spins on ``is_aborted()``; returns the monotonic time at which it saw the abort."""

    def run(self):
        self.progress(1)
        while not self.is_aborted():
            pass
        return time.monotonic()


class WaitsToRetry(AbortableTask):
    """Fails its first attempt and waits an hour for the next: a task parked in RETRY."""

    autoretry_for = (ConnectionError,)
    default_retry_delay = 3600.0

    def run(self, i):
        raise ConnectionError(f"item {i}: reset")


def wait_for_file(path):
    """Holds its worker until ``path`` exists (the benchmark's gate)."""
    while not os.path.exists(path):
        time.sleep(0.005)


class Soak(AbortableTask):
    """Works ``ms`` milliseconds, checking for an abort every millisecond; then fails if ``fail``, or returns ``ms``."""

    def run(self, ms, fail):
        deadline = time.monotonic() + ms / 1000
        while time.monotonic() < deadline:
            if self.is_aborted():
                return "aborted"
            time.sleep(0.001)
        if fail:
            raise ValueError(f"failed on purpose after {ms} ms")
        return ms


def print_lines(n):
    """Print ``n`` short lines, as fast as ``print`` goes; return how long that took in the worker."""
    start = time.perf_counter()
    for i in range(n):
        print("line", i)
    return time.perf_counter() - start


def quiet_stdout():
    """An initializer: this worker's standard output goes to /dev/null (a benchmark prints its own tables)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def spin_for(seconds):
    """Keep a CPU busy for ``seconds``, saying nothing."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds
