"""asyncio: what ``await future`` costs beside ``result()``, and how soon a cancelled await aborts the task.

Run with ``nox -s bench -- asyncio`` or ``python tests/benchmarks/bench_asyncio.py [--quick]``.
Throughput: trivial tasks (``pow``) on 2 workers, all submitted, then
waited for one by one, with ``result()`` or ``await``, beside
``ProcessPoolExecutor`` with ``result()`` and with ``await
asyncio.wrap_future``; the median of the runs, with (min-max). Latency:
from ``cancel()`` of the asyncio task awaiting a running task (and from
``future.abort()``, for comparison) to the moment the task sees the
abort, p50 / p99.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort import Executor, TaskAborted
from tests.benchmarks.bench_core import bench_abort_latency, wait_started
from tests.benchmarks.bench_tasks import SeeAbort
from tests.benchmarks.common import pct, quick, spread, table


def rate_sync(make, n):
    with make() as ex:
        list(ex.map(pow, [2] * 50, [3] * 50))  # warm
        start = time.perf_counter()
        futures = [ex.submit(pow, 2, i) for i in range(n)]
        for future in futures:
            future.result()
        return n / (time.perf_counter() - start)


def rate_async(make, n, wrap):
    async def main(ex):
        start = time.perf_counter()
        futures = [ex.submit(pow, 2, i) for i in range(n)]
        for future in futures:
            await (asyncio.wrap_future(future) if wrap else future)
        return n / (time.perf_counter() - start)

    with make() as ex:
        list(ex.map(pow, [2] * 50, [3] * 50))
        return asyncio.run(main(ex))


def cancel_latency(store, n):
    async def one(ex):
        future = ex.submit(SeeAbort)
        await asyncio.get_running_loop().run_in_executor(None, wait_started, future)
        waiting = asyncio.ensure_future(_await(future))
        await asyncio.sleep(0)
        t0 = time.monotonic()
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            pass
        try:
            future.result()
        except TaskAborted as exc:
            return (exc.partial_result - t0) * 1e3
        raise RuntimeError("the task was not aborted")

    async def main(ex):
        return [await one(ex) for _ in range(n)]

    with Executor(max_workers=1, store=store) as ex:
        return asyncio.run(main(ex))


async def _await(future):
    return await future


def main() -> None:
    short = quick(__doc__, "fewer tasks and runs")
    n, runs, samples = (2000, 3, 30) if short else (10000, 5, 100)
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "s.sqlite")

        def ours():
            return Executor(max_workers=2, store=store)

        def ppe():
            return concurrent.futures.ProcessPoolExecutor(2)

        rates = {
            ("ProcessPoolExecutor", "result()"): [rate_sync(ppe, n) for _ in range(runs)],
            ("ProcessPoolExecutor", "await asyncio.wrap_future(f)"): [rate_async(ppe, n, True) for _ in range(runs)],
            ("localabort", "result()"): [rate_sync(ours, n) for _ in range(runs)],
            ("localabort", "await f"): [rate_async(ours, n, False) for _ in range(runs)],
        }
        cancelled = cancel_latency(os.path.join(tmp, "c.sqlite"), samples)
        aborted = bench_abort_latency(os.path.join(tmp, "a.sqlite"), samples)

    print(f"localabort asyncio benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} tasks a run")
    print()
    base = {pool: statistics.median(rates[pool, "result()"]) for pool in ("ProcessPoolExecutor", "localabort")}
    table(
        ["pool", "wait", "trivial tasks/s", "vs result()"],
        [[pool, how, spread(values, "{:,.0f}"), f"{statistics.median(values) / base[pool]:.2f}x"]
         for (pool, how), values in rates.items()],
    )  # fmt: skip
    print()

    def p50_p99(values):
        return f"{statistics.median(values):.2f} / {pct(values, 99):.2f} ms"

    table(
        ["running task aborted by", "seen by the task after, p50 / p99"],
        [["cancel() of the asyncio task awaiting it", p50_p99(cancelled)], ["future.abort()", p50_p99(aborted)]],
    )


if __name__ == "__main__":
    main()
