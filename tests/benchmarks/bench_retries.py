"""What tasks waiting to retry cost: ``python tests/benchmarks/bench_retries.py [--quick]``.

In a fresh process, 10,000 tasks each fail their first attempt and wait an
hour for the next (state RETRY). Printed: the parent's resident memory per
waiting task (from /proc, against the same process with the pool started),
the store's rows and bytes per waiting task, the time for all of them to
reach RETRY, and the time ``abort_all()`` takes to end them all (each ends
ABORTED at once, and never runs again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
from tests.benchmarks.common import quick  # noqa: E402

CASE = """
import json, os, sqlite3, sys, time
sys.path.insert(0, {root!r})
from localabort import Executor
from tests.benchmarks.bench_tasks import WaitsToRetry

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

store = {store!r}
ex = Executor(max_workers=2, store=store)
ex.submit(abs, -1).result()
before = rss()
start = time.perf_counter()
futures = [ex.submit(WaitsToRetry, i) for i in range({n})]
while len(ex._scheduler.waiting) < {n}:
    time.sleep(0.01)
parked = time.perf_counter() - start
time.sleep(0.5)  # the last rows are written
after = rss()
with sqlite3.connect(store) as conn:
    rows = conn.execute("SELECT count(*) FROM localabort_tasks WHERE state = 'RETRY'").fetchone()[0]
size = sum(os.path.getsize(store + suffix) for suffix in ("", "-wal") if os.path.exists(store + suffix))
start = time.perf_counter()
ex.abort_all()
aborted = time.perf_counter() - start
assert all(f.state == "ABORTED" for f in futures)
ex.shutdown()
print(json.dumps(dict(rss=(after - before) / {n}, rows=rows, bytes=size / {n}, parked=parked, aborted=aborted)))
"""


def main() -> None:
    n = 1_000 if quick(__doc__, "1,000 tasks, not 10,000") else 10_000
    with tempfile.TemporaryDirectory() as folder:
        code = CASE.format(root=ROOT, store=os.path.join(folder, "s.sqlite"), n=n)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n{n:,} tasks waiting to retry (each failed once, next attempt in an hour)")
    print(f"{'parent memory per waiting task':<40}{figures['rss'] / 1024:>10.1f} KiB")
    print(f"{'store rows in RETRY':<40}{figures['rows']:>10,}")
    print(f"{'store bytes per waiting task':<40}{figures['bytes'] / 1024:>10.1f} KiB  (file and WAL)")
    print(f"{'all of them parked in RETRY':<40}{figures['parked']:>10.2f} s")
    print(f"{'abort_all() ends them all':<40}{figures['aborted'] * 1000:>10.0f} ms")


if __name__ == "__main__":
    main()
