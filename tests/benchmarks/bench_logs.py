"""What capturing each task's log (issue 34) costs: trivial tasks, and a task that prints 100,000 lines.

Run with ``nox -s bench -- logs`` or ``python tests/benchmarks/bench_logs.py [--quick]``.
Trivial ``submit()`` tasks/s on 2 workers, beside ``ProcessPoolExecutor``,
with the log kept (the default ``log_limit`` of 64 KiB) and with none
(``log_limit=0``); the median of the runs, with (min-max). Then one task
printing 100,000 lines (to /dev/null: what the terminal costs is not the
capture's), with and without its log kept: the time it took in its
worker, the parent's CPU meanwhile, and how many trivial tasks the other
worker ran meanwhile against the same with no printing task beside it.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort import Executor
from tests.benchmarks.bench_asyncio import rate_sync
from tests.benchmarks.bench_tasks import print_lines, quiet_stdout
from tests.benchmarks.common import quick, spread, table

LINES = 100_000


def noisy_neighbour(store, log_limit, lines):
    """One task printing ``lines`` lines beside a stream of trivial tasks: (its time, parent CPU, trivial tasks/s)."""
    with Executor(max_workers=2, store=store, log_limit=log_limit, initializer=quiet_stdout) as ex:
        list(ex.map(pow, [2] * 200, [3] * 200))
        cpu = time.process_time()
        start = time.perf_counter()
        loud = ex.submit(print_lines, lines) if lines else None
        done = 0
        while (loud is not None and not loud.done()) or (loud is None and time.perf_counter() - start < 1.0):
            futures = [ex.submit(pow, 2, i) for i in range(100)]
            for future in futures:
                future.result()
            done += 100
        elapsed = time.perf_counter() - start
        took = loud.result() if loud is not None else 0.0
        return took, (time.process_time() - cpu) / elapsed, done / elapsed, loud


def main() -> None:
    short = quick(__doc__, "fewer tasks and runs")
    n, runs = (3000, 3) if short else (10000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        rates = {
            "ProcessPoolExecutor": [rate_sync(lambda: concurrent.futures.ProcessPoolExecutor(2), n)
                                    for _ in range(runs)],
            "localabort, log kept (64 KiB)": [rate_sync(lambda: Executor(2, os.path.join(tmp, "a.sqlite")), n)
                                              for _ in range(runs)],
            "localabort, log_limit=0": [rate_sync(lambda: Executor(2, os.path.join(tmp, "b.sqlite"), log_limit=0), n)
                                        for _ in range(runs)],
        }  # fmt: skip
        alone = noisy_neighbour(os.path.join(tmp, "c.sqlite"), 64 * 1024, 0)
        kept = noisy_neighbour(os.path.join(tmp, "d.sqlite"), 64 * 1024, LINES)
        unkept = noisy_neighbour(os.path.join(tmp, "e.sqlite"), 0, LINES)
    print(f"localabort logs benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} tasks a run")
    print()
    base = statistics.median(rates["localabort, log_limit=0"])
    table(
        ["pool", "trivial submit() tasks/s", "vs log_limit=0"],
        [[name, spread(values, "{:,.0f}"), f"{statistics.median(values) / base:.3f}x"]
         for name, values in rates.items()],
    )  # fmt: skip
    print()
    table(
        [f"one task printing {LINES:,} lines", "its time in the worker", "parent CPU", "trivial tasks/s beside it"],
        [["none (the other worker alone)", "", f"{alone[1]:.0%}", f"{alone[2]:,.0f}"],
         ["log kept (64 KiB)", f"{kept[0]:.2f} s", f"{kept[1]:.0%}", f"{kept[2]:,.0f}"],
         ["log_limit=0", f"{unkept[0]:.2f} s", f"{unkept[1]:.0%}", f"{unkept[2]:,.0f}"]],
    )  # fmt: skip
    assert kept[3].logs.endswith(f"line {LINES - 1}\n") and unkept[3].logs == ""


if __name__ == "__main__":
    main()
