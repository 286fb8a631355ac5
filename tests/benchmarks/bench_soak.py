"""Soaks: ten minutes of chaos for the executor (``tests.chaos``), then localabort.celery's: 5,000 tasks,
two workers, aborts, failures, and worker processes killed.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_soak.py [--quick]``.
Needs a Redis broker and a PostgreSQL store (``LOCALABORT_TEST_REDIS_URL``,
``LOCALABORT_TEST_POSTGRES_URL``; ``nox -s bench`` starts them with the
``.ci`` scripts). Two ``celery worker --pool=prefork -c 2`` run tasks of
5 to 50 ms that check for an abort every millisecond; a random 10 % fail
on purpose; a random 20 % are aborted, half while queued and half while
running; and every
``KILL_EVERY`` s a random worker process is SIGKILLed, as the OOM killer
would. Then it checks each task against its history:

- every task ended: nothing is PENDING, RECEIVED or STARTED;
- ABORTED only if an abort was asked while it was unfinished;
- FAILURE with ``WorkerLost`` only if the process that claimed it was killed
  (or, for a task no process claimed, one was killed in the 5 s before:
  Celery had handed it to that process, which died before starting it);
- FAILURE with the task's own ``ValueError`` only for a task meant to fail;
- SUCCESS only for one not meant to fail;
- every abort asked while the task was unfinished is on its row (none lost);
- ``get()`` on every result returned within its timeout.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from tests.benchmarks.common import quick, table  # noqa: E402

KILL_EVERY = 3.0


def children(pid):
    """The pids of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def executor_chaos(minutes: float) -> None:
    """The executor's own soak (``tests.chaos``): one batch under chaos, then every task against its history."""
    from tests import chaos

    started = time.monotonic()
    outcomes, violations, kills = chaos.run(minutes * 60, Path(tempfile.mkdtemp()))
    took = time.monotonic() - started
    print(f"\nExecutor chaos: {minutes:g} min, {sum(outcomes.values()):,} tasks, {kills} workers SIGKILLed, "
          f"{len(violations)} violations ({took:.0f} s with the last tasks and the checks)")  # fmt: skip
    table(["task: how it ended", "tasks"], [[name, f"{count:,}"] for name, count in sorted(outcomes.items())])
    for violation in violations[:20]:
        print("  VIOLATION", violation)


def main() -> None:
    short = quick(__doc__, "1,000 tasks instead of 5,000, and one minute of the executor's chaos instead of ten")
    executor_chaos(1.0 if short else 10.0)
    count = 1_000 if short else 5_000
    redis_url, postgres = os.environ.get("LOCALABORT_TEST_REDIS_URL"), os.environ.get("LOCALABORT_TEST_POSTGRES_URL")
    if not (redis_url and postgres):
        print("bench_soak: skipped, no Redis and PostgreSQL servers (.ci/redis.sh and .ci/postgres.sh start them)")
        return
    import redis
    import sqlalchemy as sa

    redis.Redis.from_url(redis_url).flushdb()
    engine = sa.create_engine(postgres)
    with engine.begin() as conn:  # a clean store: the tally reads every row
        conn.exec_driver_sql("DROP TABLE IF EXISTS localabort_tasks, localabort_executors, localabort_meta")
    engine.dispose()
    tmp = tempfile.mkdtemp()
    os.environ.update(BENCH_CELERY_DIR=tmp, BENCH_CELERY_BROKER=redis_url, BENCH_CELERY_BACKEND=f"db+{postgres}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    from localabort import TaskAborted, WorkerLost
    from tests.benchmarks import celery_bench_app as bench

    command = [sys.executable, "-m", "celery", "-A", "tests.benchmarks.celery_bench_app", "worker", "--pool=prefork",
               "-c", "2", "--without-gossip", "--without-mingle", "-l", "warning"]  # fmt: skip
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    workers = [subprocess.Popen([*command, "-n", f"soak{i}@%h"], cwd=ROOT, env=env, start_new_session=True, **quiet)
               for i in (1, 2)]  # fmt: skip
    rng = random.Random(19)
    killed, stop = [], threading.Event()

    def killer():
        while not stop.wait(KILL_EVERY):
            pids = [pid for w in workers for pid in children(w.pid)]
            if pids:
                victim = rng.choice(pids)
                killed.append((victim, time.time()))
                os.kill(victim, signal.SIGKILL)

    try:
        bench.soak.delay(1, False).get(timeout=120)  # both workers up (the first answer is enough to start)
        start = time.monotonic()
        threading.Thread(target=killer, daemon=True).start()
        plans = [(rng.randint(5, 50), rng.random() < 0.1, rng.random() < 0.2) for _ in range(count)]
        results = [bench.soak.delay(ms, fail) for ms, fail, _ in plans]
        asked = {}
        for res, (_, _, abort) in zip(results, plans):  # in the order they were sent, so roughly as they start
            if not abort:
                continue
            if rng.random() < 0.5:  # the other half: while it runs, if it starts within a second
                deadline = time.monotonic() + 1.0
                while res.state == "PENDING" and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.random() * 0.02)
            asked[res.id] = res.abort()
        outcomes, late = collections.Counter(), 0
        for res in results:
            try:
                res.get(timeout=120)
                outcomes["SUCCESS"] += 1
            except TaskAborted:
                outcomes["ABORTED"] += 1
            except WorkerLost:
                outcomes["FAILURE (WorkerLost)"] += 1
            except ValueError:
                outcomes["FAILURE (ValueError)"] += 1
            except Exception as exc:  # a timeout of get() among them
                outcomes[f"other: {type(exc).__name__}"] += 1
                late += 1
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)

    store = results[0].store
    with store.engine.connect() as conn:
        pids = dict(conn.exec_driver_sql("SELECT id, pid FROM localabort_executors").all())
    records = {r.id: r for r in store.tasks(outcomes=False)}
    violations = collections.Counter()
    for res, (_, fail, _) in zip(results, plans):
        r = records[res.id]
        # Lost with its process: the one that claimed it, or (never claimed) the one Celery had handed it to.
        lost_process = any(pid == pids.get(r.executor_id) or (r.executor_id == "celery" and 0 <= r.finished_at - at < 5)
                           for pid, at in killed)  # fmt: skip
        if r.state not in ("SUCCESS", "FAILURE", "ABORTED"):
            violations["unfinished"] += 1
        elif r.state == "ABORTED" and not asked.get(res.id):
            violations["ABORTED, never asked"] += 1
        elif r.state == "FAILURE" and r.error.startswith("WorkerLost") and not lost_process:
            violations["WorkerLost, process not killed"] += 1
        elif r.state == "FAILURE" and r.error.startswith("ValueError") and not fail:
            violations["ValueError, not meant to fail"] += 1
        elif r.state == "SUCCESS" and fail:
            violations["SUCCESS, meant to fail"] += 1
        if asked.get(res.id) and not r.abort_requested:
            violations["abort lost"] += 1
    print(f"Soak on two Celery workers (prefork -c 2, Redis broker, PostgreSQL store), Python {sys.version.split()[0]}")
    print()
    print(f"{count:,} tasks in {elapsed:.1f} s; {sum(asked.values()):,} aborted while unfinished "
          f"({len(asked):,} asked); {sum(f for _, f, _ in plans):,} meant to fail; {len(killed)} worker processes "
          f"killed, one every {KILL_EVERY:.0f} s")  # fmt: skip
    print()
    table(("outcome (get())", "tasks"), sorted(outcomes.items()))
    print()
    table(("check against each task's history", "violations"),
          [(what, violations[what]) for what in ("unfinished", "ABORTED, never asked", "WorkerLost, process not killed",
                                                 "ValueError, not meant to fail", "SUCCESS, meant to fail",
                                                 "abort lost")] + [("get() did not return", late)])  # fmt: skip


if __name__ == "__main__":
    main()
