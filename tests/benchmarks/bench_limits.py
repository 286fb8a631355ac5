"""Memory limits: how far past a limit a fast allocator gets, and what the limits cost trivial tasks.

Run with ``nox -s bench -- limits`` or ``python tests/benchmarks/bench_limits.py [--quick]``.
Overshoot: a task taking 50 MB every 10 ms (written, so resident) past a
limit of 200 MiB: with ``soft_memory_limit``, its peak resident memory
(exact: the kernel's high-water mark) by the time it stopped; with ``memory_limit`` (a task that never checks), what its
worker used at the look that killed it. Cost: trivial tasks on 2 workers
(fork), with no limit, and with both limits set on every task (each task
then starts and stops the worker's watch and sets its address-space cap);
the median of the runs, with (min-max).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort import Executor, MemoryLimitExceeded, SoftMemoryLimitExceeded
from localabort._memory import SAMPLE_INTERVAL
from tests.benchmarks.common import pct, quick, spread, table
from tests.tasks import Grow, GrowDeaf

LIMIT_MB = 200
STEP_MB, EVERY = 50, 0.01


def overshoot(store, runs):
    soft, hard = [], []
    with Executor(max_workers=1, store=store, mp_context="fork") as ex:
        for _ in range(runs):
            future = ex.apply_async(Grow, (STEP_MB, EVERY), soft_memory_limit=f"{LIMIT_MB}MiB")
            try:
                future.result(timeout=60)
            except SoftMemoryLimitExceeded:
                soft.append(ex.store.get(future.id).peak_rss / 2**20 - LIMIT_MB)  # its exact peak, as it stopped
            try:
                ex.apply_async(GrowDeaf, (STEP_MB, EVERY), memory_limit=f"{LIMIT_MB}MiB").result(timeout=60)
            except MemoryLimitExceeded as exc:
                used = int(re.search(r"used (\d+) MiB", str(exc)).group(1))
                hard.append(used - LIMIT_MB)
    return soft, hard


def identity(x):
    return x


def rate(store, n, limited):
    options = {"soft_memory_limit": "1GiB", "memory_limit": "2GiB"} if limited else {}
    with Executor(max_workers=2, store=store, mp_context="fork") as ex:
        list(ex.map(identity, range(50)))
        start = time.perf_counter()
        futures = [ex.apply_async(identity, (i,), **options) for i in range(n)]
        for future in futures:
            future.result()
        return n / (time.perf_counter() - start)


def main() -> None:
    short = quick(__doc__, "fewer tasks and runs")
    n, runs = (3000, 3) if short else (20000, 11)
    with tempfile.TemporaryDirectory() as tmp:
        soft, hard = overshoot(os.path.join(tmp, "over.sqlite"), runs)
        plain, limited = [], []
        for i in range(runs):  # alternate, so a busy moment of the machine hits both alike
            plain.append(rate(os.path.join(tmp, f"p{i}.sqlite"), n, False))
            limited.append(rate(os.path.join(tmp, f"l{i}.sqlite"), n, True))
    print(f"Memory limits, Python {sys.version.split()[0]}, {os.cpu_count()} cores; the watch looks every "
          f"{SAMPLE_INTERVAL * 1000:g} ms")  # fmt: skip
    print()
    print(f"Overshoot: a task taking {STEP_MB} MB every {EVERY * 1000:g} ms, limit {LIMIT_MB} MiB, {runs} runs (MiB)")
    print()
    table(("limit", "past the limit, p50", "max"), [
        ("soft_memory_limit: its peak, by the time it stopped", f"{pct(soft, 50):.0f}", f"{max(soft):.0f}"),
        ("memory_limit: used at the look that killed it", f"{pct(hard, 50):.0f}", f"{max(hard):.0f}"),
    ])  # fmt: skip
    print()
    ratios = [one / other for one, other in zip(limited, plain)]  # each pair ran back to back
    print(f"Cost: trivial tasks, 2 workers, {n} tasks (target: at most 2% slower with the limits)")
    print()
    table(("tasks", "tasks/s", "ratio (each pair run back to back)"), [
        ("no memory limit", spread(plain, "{:,.0f}"), "1.00"),
        ("soft and hard memory limits on every task", spread(limited, "{:,.0f}"), spread(ratios, "{:.3f}")),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
