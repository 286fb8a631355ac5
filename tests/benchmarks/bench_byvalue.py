"""What a task sent by value costs: a lambda, a local class, beside an importable function and class.

Run with ``nox -s bench -- byvalue`` or ``python tests/benchmarks/bench_byvalue.py [--quick]``.
Trivial tasks on 2 workers (fork), all submitted, then collected; the
median of the runs, with (min-max), and the ratio to the same task
importable by name. Also what a ``submit()`` alone costs the caller (its
pickling), per task. ``ProcessPoolExecutor`` cannot send a lambda or a
local class at all; it is shown with the importable function.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort import AbortableTask, Executor
from localabort._byvalue import dumps
from tests.benchmarks.bench_tasks import Noop, identity
from tests.benchmarks.common import quick, spread, table


def rate(make, task, n):
    with make() as ex:
        list(ex.map(identity, range(50)))  # warm
        start = time.perf_counter()
        futures = [ex.submit(task, i) for i in range(n)]
        for future in futures:
            future.result()
        return n / (time.perf_counter() - start)


def pickling_us(task, n=2000):
    start = time.perf_counter()
    for i in range(n):
        dumps((task, (i,), {}), "task")
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    short = quick(__doc__, "fewer tasks and runs")
    n, runs = (2000, 3) if short else (10000, 5)

    class LocalNoop(AbortableTask):  # defined in a function: it goes by value
        def run(self, x):
            return x

    tasks = {
        "importable function (by reference)": identity,
        "lambda (by value)": lambda x: x,
        "importable AbortableTask (by reference)": Noop,
        "local AbortableTask (by value)": LocalNoop,
    }
    with tempfile.TemporaryDirectory() as tmp:
        ppe = lambda: concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))  # noqa: E731
        ours = lambda: Executor(max_workers=2, store=os.path.join(tmp, f"{time.monotonic_ns()}.sqlite"),  # noqa: E731
                                mp_context="fork")  # fmt: skip
        rates = {"ProcessPoolExecutor, importable function": [rate(ppe, identity, n) for _ in range(runs)]}
        for name, task in tasks.items():
            rates[f"localabort, {name}"] = [rate(ours, task, n) for _ in range(runs)]
    rows = []
    for name, got in rates.items():
        base = rates["localabort, importable AbortableTask (by reference)" if "AbortableTask" in name
                     else "localabort, importable function (by reference)"]  # fmt: skip
        ratio = f"{statistics.median(got) / statistics.median(base):.2f}" if name.startswith("localabort") else "-"
        task = tasks.get(name.split(", ", 1)[1]) if name.startswith("localabort") else identity
        rows.append((name, spread(got, "{:,.0f}"), ratio, f"{pickling_us(task):.1f}"))
    print(f"Tasks sent by value, Python {sys.version.split()[0]}, {os.cpu_count()} cores; trivial tasks, 2 workers, "
          f"{n} tasks, {runs} runs")  # fmt: skip
    print()
    table(("task", "tasks/s", "x the same by reference", "pickling us per submit"), rows)


if __name__ == "__main__":
    main()
