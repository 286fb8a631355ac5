"""Start-up and holding: ``Executor()`` to the first result, and the parent's memory per pending task.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_startup.py [--quick]``.
Each first-result figure is a fresh interpreter timing from just before the
constructor to the first ``result()`` (imports the constructor makes
included, the interpreter's own start-up not); "a second one" times a
second pool in the same interpreter, after a first was made and shut
down. localabort's modules are compiled first, as a ``pip install``
leaves them (with ``PYTHONDONTWRITEBYTECODE`` set and an editable
install, each run would compile them again). Memory per pending task: the
workers are kept busy, N trivial tasks are submitted, and the parent's RSS
growth is divided by N (localabort holds each task's row in the store too).
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from tests.benchmarks import common

FIRST = r"""
import os, sys, time, tempfile
sys.path.insert(0, {root!r})
which, method = sys.argv[1:3]
store = os.path.join(tempfile.mkdtemp(), "s.sqlite")
if __name__ == "__main__":
    start = time.perf_counter()
    if which == "ppe":
        import concurrent.futures, multiprocessing
        pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method))
    else:
        from localabort import Executor
        pool = Executor(max_workers=2, store=store, mp_context=method)
    pool.submit(abs, -1).result()
    print((time.perf_counter() - start) * 1000)
    pool.shutdown()
"""

SECOND = r"""
import os, sys, time, tempfile
sys.path.insert(0, {root!r})
which, method = sys.argv[1:3]

def make():
    if which == "ppe":
        import concurrent.futures, multiprocessing
        return concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method))
    from localabort import Executor
    return Executor(max_workers=2, store=os.path.join(tempfile.mkdtemp(), "s.sqlite"), mp_context=method)

if __name__ == "__main__":
    first = make()
    first.submit(abs, -1).result()
    first.shutdown()
    start = time.perf_counter()
    pool = make()
    pool.submit(abs, -1).result()
    print((time.perf_counter() - start) * 1000)
    pool.shutdown()
"""

PENDING = r"""
import os, sys, tempfile, threading
sys.path.insert(0, {root!r})
from tests.benchmarks.bench_tasks import identity, wait_for_file
which, n = sys.argv[1], int(sys.argv[2])
tmp = tempfile.mkdtemp()
gate = os.path.join(tmp, "go")

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

if __name__ == "__main__":
    if which == "ppe":
        import concurrent.futures, multiprocessing
        pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    else:
        from localabort import Executor
        pool = Executor(max_workers=2, store=os.path.join(tmp, "s.sqlite"), mp_context="fork")
    busy = [pool.submit(wait_for_file, gate) for _ in range(2)]
    before = rss()
    futures = [pool.submit(identity, i) for i in range(n)]
    import time; time.sleep(1.0)  # the pool's own threads take up the new work
    print((rss() - before) / n)
    open(gate, "w").close()
    for f in futures:
        f.result()
"""


#: SQLAlchemy's import, timed as FIRST times the constructor: the floor issue 33's target allows for (an executor
#: on an SQLite file, which ``_sqlite`` opens with ``sqlite3`` alone, no longer pays it).
IMPORT = r"""
import time
start = time.perf_counter()
import sqlalchemy
print((time.perf_counter() - start) * 1000)
"""


def run(code, *args):
    out = subprocess.run([sys.executable, "-c", code.format(root=common.ROOT), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return float(out.stdout.split()[0])


def median(values):
    return sorted(values)[len(values) // 2]


def main():
    quick = common.quick(__doc__, "3 repetitions and 100,000 pending tasks (default: 7 and 1,000,000)")
    reps, pending = (3, 100_000) if quick else (7, 1_000_000)
    compileall.compile_dir(os.path.join(common.ROOT, "localabort"), quiet=1)
    print(f"localabort start-up and pending tasks, Python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    rows = []
    floor = [run(IMPORT) for _ in range(reps)]
    for method in ("fork", "spawn", "forkserver"):
        ppe = [run(FIRST, "ppe", method) for _ in range(reps)]
        ours = [run(FIRST, "localabort", method) for _ in range(reps)]
        limit = max(median(ppe), median(floor)) + 30
        rows.append((f"constructor -> first result, {method}, ms", common.spread(ppe, "{:,.0f}"),
                     common.spread(ours, "{:,.0f}"), f"<= {limit:,.0f} (the longer of PPE's and the import, + 30)",
                     common.verdict(median(ours) <= limit)))  # fmt: skip
    rows.append(("import sqlalchemy alone (the target's floor; an executor on an SQLite file never imports it), ms", "",
                 common.spread(floor, "{:,.0f}"), "", ""))  # fmt: skip
    for method in ("fork", "spawn", "forkserver"):
        ppe = [run(SECOND, "ppe", method) for _ in range(reps)]
        ours = [run(SECOND, "localabort", method) for _ in range(reps)]
        limit = 2 * median(ppe) + 10
        rows.append((f"the same, a second one in the process, {method}, ms", common.spread(ppe, "{:,.0f}"),
                     common.spread(ours, "{:,.0f}"), f"<= {limit:,.0f} (2x PPE's + 10)",
                     common.verdict(median(ours) <= limit)))  # fmt: skip
    ppe = [run(PENDING, "ppe", str(pending)) for _ in range(2)]
    ours = [run(PENDING, "localabort", str(pending)) for _ in range(2)]
    rows.append((f"parent RSS per pending task, {pending:,} submitted, bytes", common.spread(ppe, "{:,.0f}"),
                 common.spread(ours, "{:,.0f}"), "<= PPE's", common.verdict(max(ours) <= min(ppe))))  # fmt: skip
    common.table(("figure", "ProcessPoolExecutor", "localabort", "target (issue 33)", ""), rows)


if __name__ == "__main__":
    main()
