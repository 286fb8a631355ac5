"""Core figures: what one abort check costs in a task, and how soon a task sees an abort.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_core.py [--quick]``.
The check cost is the median over repetitions, with (min-max); latencies
are p50 / p99 over many aborts. Throughput is in bench_throughput.py, and
Celery's figures on a real worker in bench_celery.py.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort import Executor, TaskAborted
from tests.benchmarks.bench_tasks import CheckCost, SeeAbort
from tests.benchmarks.common import pct, quick, spread, verdict

TARGETS = {"check_us": 0.3, "abort_p50_ms": 5.0, "abort_p99_ms": 20.0, "external_p99_ms": 50.0}


def wait_started(fut):
    deadline = time.monotonic() + 30
    while fut.progress is None:
        if time.monotonic() > deadline:
            raise RuntimeError("task did not start")
        time.sleep(0.0005)


def bench_check(store, reps):
    with Executor(max_workers=1, store=store) as ex:
        return [ex.submit(CheckCost, 2_000_000).result() * 1e6 for _ in range(reps)]


def bench_abort_latency(store, n):
    latencies = []
    with Executor(max_workers=1, store=store) as ex:
        for _ in range(n):
            fut = ex.submit(SeeAbort)
            wait_started(fut)
            t0 = time.monotonic()
            fut.abort()
            try:
                fut.result()
            except TaskAborted as exc:
                latencies.append((exc.partial_result - t0) * 1e3)
    return latencies


EXTERNAL = """
import sys, time
from localabort import AbortableAsyncResult
res = AbortableAsyncResult(sys.argv[1], store=sys.argv[2])
t0 = time.monotonic()
res.abort()
print(t0)
"""


def bench_external_abort(store, n):
    latencies = []
    with Executor(max_workers=1, store=store) as ex:
        for _ in range(n):
            fut = ex.submit(SeeAbort)
            wait_started(fut)
            while ex.store.get(fut.id) is None or ex.store.get(fut.id).state != "STARTED":
                time.sleep(0.001)
            out = subprocess.run([sys.executable, "-c", EXTERNAL, fut.id, store], capture_output=True, text=True)
            t0 = float(out.stdout)
            try:
                fut.result()
            except TaskAborted as exc:
                latencies.append((exc.partial_result - t0) * 1e3)
    return latencies


def main() -> None:
    short = quick(__doc__, "fewer tasks and repetitions")
    reps, samples = (2, 30) if short else (5, 100)
    with tempfile.TemporaryDirectory() as tmp:
        check = bench_check(os.path.join(tmp, "check.sqlite"), reps)
        local = bench_abort_latency(os.path.join(tmp, "abort.sqlite"), samples)
        external = bench_external_abort(os.path.join(tmp, "ext.sqlite"), max(10, samples // 4))

    print(f"localabort core benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print()
    print("| figure | localabort | target | |")
    print("|---|---|---|---|")
    print(f"| one is_aborted() in a child (loop included) | {spread(check)} us | <= 0.3 us | "
          f"{verdict(statistics.median(check) <= TARGETS['check_us'])} |")  # fmt: skip
    p50, p99 = statistics.median(local), pct(local, 99)
    print(f"| future.abort() -> task sees it, p50 / p99 of {len(local)} | {p50:.3f} / {p99:.3f} ms | "
          f"<= 5 / 20 ms | {verdict(p50 <= 5)}, {verdict(p99 <= 20)} |")  # fmt: skip
    e50, e99 = statistics.median(external), pct(external, 99)
    print(f"| AbortableAsyncResult.abort() in another process -> seen, p50 / p99 of {len(external)} | "
          f"{e50:.1f} / {e99:.1f} ms | p99 <= 50 ms | {verdict(e99 <= 50)} |")  # fmt: skip


if __name__ == "__main__":
    main()
