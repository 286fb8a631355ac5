"""Peak memory of ``map()`` over a long generator: localabort with ``buffersize`` beside ProcessPoolExecutor.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_memory.py [--quick]``.
Each case runs in a fresh process, which reports its resident set size
once the pool has started and its peak (``ru_maxrss``) at the end. Before
Python 3.14, ProcessPoolExecutor.map takes the whole iterable first, so it
is measured on fewer items; localabort's growth should not depend on the
count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
from tests.benchmarks.common import quick  # noqa: E402

TARGET_MB = 50

CASE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from tests.benchmarks.bench_tasks import identity

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

pool, count, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
items = (i for i in range(count))
if pool == "localabort":
    from localabort import Executor
    ex = Executor(max_workers=2, store=store, mp_context="fork")
    options = dict(chunksize=100, buffersize=16)
else:
    import concurrent.futures, multiprocessing
    ex = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    options = dict(chunksize=100)
list(ex.map(identity, range(20)))
start = rss_mb()
t0 = time.perf_counter()
total = sum(1 for _ in ex.map(identity, items, **options))
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ex.shutdown()
assert total == count
print(json.dumps(dict(start=start, peak=peak, seconds=elapsed)))
"""


def run(pool, count, tmp):
    store = os.path.join(tmp, f"{pool}-{count}.sqlite")
    out = subprocess.run(
        [sys.executable, "-c", CASE.format(root=ROOT), pool, str(count), store],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def main() -> None:
    short = quick(__doc__, "10^6 items at most")
    big = 10**6 if short else 10**7
    cases = [("localabort", 10**5), ("localabort", 10**6), ("localabort", big), ("ProcessPoolExecutor", 10**5),
             ("ProcessPoolExecutor", 10**6)]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pool, count in dict.fromkeys(cases):
            t0 = time.perf_counter()
            r = run(pool, count, tmp)
            rows.append((pool, count, r, time.perf_counter() - t0))
    print(f"map(identity, generator, chunksize=100), 2 workers, Python {sys.version.split()[0]}; "
          "localabort with buffersize=16 (tasks of 100 items in flight)")  # fmt: skip
    print()
    print("| pool | items | RSS after start-up | peak RSS | growth | items/s | |")
    print("|---|---|---|---|---|---|---|")
    for pool, count, r, _ in rows:
        growth = r["peak"] - r["start"]
        ok = "" if pool != "localabort" else ("meets target" if growth <= TARGET_MB else "MISSES target")
        print(f"| {pool} | {count:,} | {r['start']:.0f} MB | {r['peak']:.0f} MB | {growth:+.0f} MB | "
              f"{count / r['seconds']:,.0f} | {ok} |")  # fmt: skip
    print()
    print(f"Target: growth <= {TARGET_MB} MB over the start for 10,000,000 items.")


if __name__ == "__main__":
    main()
