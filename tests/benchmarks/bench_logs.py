"""What capturing each task's log (issue 34) costs: trivial tasks, and a task that prints 100,000 lines.

Run with ``nox -s bench -- logs`` or ``python tests/benchmarks/bench_logs.py [--quick]``.

Trivial ``submit()`` tasks/s on 2 workers with each task's log kept (the
default ``log_limit``, 64 KiB) and with none (``log_limit=0``: no capture
at all), beside ``ProcessPoolExecutor``; the runs of each alternate, and
the table gives the median with (min-max). Then one task printing 100,000
lines (to /dev/null: what a terminal costs is not the capture's), with its
log kept and with none: its time in its worker; and, while it runs beside
a stream of trivial tasks, the parent's CPU and the trivial tasks' rate,
against a task that spins as long printing nothing.
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
from tests.benchmarks.bench_tasks import print_lines, quiet_stdout, spin_for
from tests.benchmarks.common import quick, spread, table

LINES = 100_000


def beside(store, log_limit, task, arg):
    """``task(arg)`` beside a stream of trivial tasks: (its result, the parent's CPU share, trivial tasks/s)."""
    with Executor(max_workers=2, store=store, log_limit=log_limit, initializer=quiet_stdout) as ex:
        list(ex.map(pow, [2] * 200, [3] * 200))
        cpu, start = time.process_time(), time.perf_counter()
        main = ex.submit(task, arg)
        done = 0
        while not main.done():
            futures = [ex.submit(pow, 2, i) for i in range(50)]
            for future in futures:
                future.result()
            done += 50
        elapsed = time.perf_counter() - start
        return main.result(), (time.process_time() - cpu) / elapsed, done / elapsed, main.logs


def main() -> None:
    short = quick(__doc__, "fewer tasks and runs")
    n, runs = (4000, 5) if short else (10000, 9)
    with tempfile.TemporaryDirectory() as tmp:
        makers = {
            "ProcessPoolExecutor": lambda: concurrent.futures.ProcessPoolExecutor(2),
            "localabort, log kept (64 KiB)": lambda: Executor(2, os.path.join(tmp, "a.sqlite")),
            "localabort, log_limit=0": lambda: Executor(2, os.path.join(tmp, "b.sqlite"), log_limit=0),
        }
        rates = {name: [] for name in makers}
        for _ in range(runs):  # alternated: a machine's slow minute falls on all of them
            for name, make in makers.items():
                rates[name].append(rate_sync(make, n))
        kept = beside(os.path.join(tmp, "c.sqlite"), 64 * 1024, print_lines, LINES)
        unkept = beside(os.path.join(tmp, "d.sqlite"), 0, print_lines, LINES)
        quiet = beside(os.path.join(tmp, "e.sqlite"), 64 * 1024, spin_for, kept[0])
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
        ["beside a stream of trivial tasks", "its time in the worker", "parent CPU", "trivial tasks/s beside it"],
        [[f"print {LINES:,} lines, log kept (64 KiB)", f"{kept[0]:.2f} s", f"{kept[1]:.0%}", f"{kept[2]:,.0f}"],
         [f"print {LINES:,} lines, log_limit=0", f"{unkept[0]:.2f} s", f"{unkept[1]:.0%}", f"{unkept[2]:,.0f}"],
         ["spin as long, print nothing", f"{quiet[0]:.2f} s", f"{quiet[1]:.0%}", f"{quiet[2]:,.0f}"]],
    )  # fmt: skip
    assert kept[3].endswith(f"line {LINES - 1}\n") and unkept[3] == ""


if __name__ == "__main__":
    main()
