"""The store's floor under each write plan of issue 33, on this schema: CPU per task, SQLite alone.

Run with ``nox -s bench -- floor`` or ``python tests/benchmarks/bench_floor.py [--quick]``.

Each plan writes 20,000 trivial tasks with the executor's own statements
(``_sql.sync``) on ``sqlite3``, 150 rows a transaction, as the recorder
does: today's three writes (PENDING, the claim, the final row); the final
row as a narrow UPDATE; without the claim's UPDATE (what a claim
watermark would save at best); written once (a task whose states fall in
one commit window). Then the design where workers write their own final
rows: two worker processes commit final rows, 1, 8 or 32 to a
transaction, while a recorder process writes PENDING rows and claims; the
CPU of all three, per task. The figures are floors: no pickling, no pipe,
no executor.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from localabort._sql import TASKS, sync
from localabort._states import new_id, task_row
from localabort._store import Store
from tests.benchmarks import common

#: Rows a write takes, as the recorder's group commits do in a steady flow of trivial tasks (146 measured).
BATCH = 150
#: The columns a task's end sets.
END = ("state", "started_at", "finished_at", "result", "worker_pid", "cpu_seconds", "peak_rss", "retries")
NARROW = (f"UPDATE {TASKS} SET " + ", ".join(f"{c} = ?" for c in END)
          + " WHERE id = ? AND executor_id = ? AND state IN ('PENDING', 'RECEIVED', 'STARTED', 'RETRY')")  # fmt: skip


def connect(path):
    """The store at ``path`` opened with ``sqlite3`` as the recorder opens it."""
    args, kwargs = Store.open(path).driver_connect()
    db = sqlite3.connect(*args, **kwargs)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def fresh():
    path = os.path.join(tempfile.mkdtemp(), "floor.sqlite")
    Store.open(path, create=True)
    return path


def rows(ids, state):
    now = time.time()
    made = []
    for task_id in ids:
        row = task_row(task_id, executor_id="ex", name="tests.identity", state=state, submitted_at=now, args_repr="5")
        if state == "SUCCESS":
            row.update(started_at=now, finished_at=now, result=b"\x80\x04K\x05.", worker_pid=1, cpu_seconds=1e-4,
                       peak_rss=1000, retries=0)  # fmt: skip
        made.append(row)
    return made


def transaction(db, work):
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    work(cur)
    cur.execute("COMMIT")


def pending(db, chunk):
    transaction(db, lambda cur: sync(cur, False, "ex", rows(chunk, "PENDING"), [], [], 1.0))


def claim(db, chunk):
    transaction(db, lambda cur: sync(cur, False, "ex", [], [], [(i, "tests.identity", None) for i in chunk], 1.0))


def final(db, chunk):
    transaction(db, lambda cur: sync(cur, False, "ex", rows(chunk, "SUCCESS"), [], [], None))


def narrow(db, chunk):
    values = [(*(row[c] for c in END), row["id"], "ex") for row in rows(chunk, "SUCCESS")]
    transaction(db, lambda cur: cur.executemany(NARROW, values))


PLANS = {
    "three writes (as shipped)": (pending, claim, final),
    "the final row as a narrow UPDATE": (pending, claim, narrow),
    "no claim UPDATE (a watermark's best)": (pending, final),
    "written once": (final,),
}


def plan_table(count, reps):
    spent = {name: [] for name in PLANS}
    for _ in range(reps):
        for name, steps in PLANS.items():
            db, ids = connect(fresh()), [new_id() for _ in range(count)]
            start = time.process_time()
            for at in range(0, count, BATCH):
                for step in steps:
                    step(db, ids[at : at + BATCH])
            spent[name].append((time.process_time() - start) / count * 1e6)
            db.close()
    return [(name, common.spread(us, "{:.1f}")) for name, us in spent.items()]


def _recorder(path, ids, out):
    db, start = connect(path), time.process_time()
    for at in range(0, len(ids), BATCH):
        pending(db, ids[at : at + BATCH])
        claim(db, ids[at : at + BATCH])
    out.put(("recorder", time.process_time() - start))


def _worker(path, ids, size, out):
    db, start = connect(path), time.process_time()
    for at in range(0, len(ids), size):
        final(db, ids[at : at + size])
    out.put(("workers", time.process_time() - start))


def workers_write_table(count, reps):
    """Two workers commit their own final rows while a recorder writes the PENDING rows and claims of others."""
    ctx = multiprocessing.get_context("fork")
    table = []
    for size in (1, 8, 32):
        recorder, workers, walls = [], [], []
        for _ in range(reps):
            path = fresh()
            ids = [new_id() for _ in range(count)]
            ran, queued = ids[: count // 2], ids[count // 2 :]
            db = connect(path)  # the tasks the workers end were written and claimed before
            for at in range(0, len(ran), BATCH):
                written = rows(ran[at : at + BATCH], "RECEIVED")
                transaction(db, lambda cur, written=written: sync(cur, False, "ex", written, [], [], 1.0))
            out = ctx.Queue()
            procs = [ctx.Process(target=_recorder, args=(path, queued, out)),
                     *(ctx.Process(target=_worker, args=(path, ran[w::2], size, out)) for w in range(2))]  # fmt: skip
            start = time.perf_counter()
            for proc in procs:
                proc.start()
            got = [out.get() for _ in procs]
            for proc in procs:
                proc.join()
            walls.append((time.perf_counter() - start) * 1e3)
            tasks = count // 2
            recorder.append(sum(s for who, s in got if who == "recorder") / tasks * 1e6)
            workers.append(sum(s for who, s in got if who == "workers") / tasks * 1e6)
        total = [r + w for r, w in zip(recorder, workers)]
        table.append((size, common.spread(recorder, "{:.1f}"), common.spread(workers, "{:.1f}"),
                      common.spread(total, "{:.1f}"), common.spread(walls, "{:.0f}")))  # fmt: skip
    return table


def main() -> None:
    short = common.quick(__doc__, "fewer tasks and repetitions")
    count, reps = (10_000, 2) if short else (20_000, 3)
    print(f"The store's floor, SQLite {sqlite3.sqlite_version}, {count:,} trivial tasks, {BATCH} rows a transaction")
    print()
    common.table(("write plan (one process, the recorder's statements)", "CPU us per task"), plan_table(count, reps))
    print()
    print(f"Workers write their own final rows ({count // 2:,} tasks ended by 2 workers, while a recorder "
          f"writes {count // 2:,} others' PENDING rows and claims)")  # fmt: skip
    print()
    common.table(("final rows a worker commits at once", "recorder, us/task", "workers, us/task", "sum, us/task",
                  "ms, all three"), workers_write_table(count, reps))  # fmt: skip


if __name__ == "__main__":
    main()
