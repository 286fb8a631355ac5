"""On real Celery workers: the abort check and the abort latency of localabort.celery beside celery.contrib.abortable.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_celery.py [--quick]``.
One ``celery worker --pool=prefork -c 2`` serves both kinds of task, in
each set-up: the kombu ``sqla+sqlite`` broker with the ``db+sqlite``
backend (no server), then, when ``LOCALABORT_TEST_REDIS_URL`` and
``LOCALABORT_TEST_POSTGRES_URL`` name servers (``nox -s bench`` starts them
with ``.ci/redis.sh`` and ``.ci/postgres.sh``), a Redis broker with the
``db+postgresql`` backend. Latency runs from just before ``abort()`` is
called to the moment the task sees it (``time.monotonic()`` is one clock
for every process here). On PostgreSQL it also counts the store's
transactions (``pg_stat_database``) with the worker idle and with tasks
running: the load the worker processes' watches and the tasks' progress
reports put on the store.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from tests.benchmarks.common import pct, quick, spread, table, verdict  # noqa: E402

#: Issue 19's targets.
P50_MS, P99_MS, CHECK_US = 5.0, 20.0, 1.0
#: Seconds each store-load window lasts.
WINDOW = 5.0


def measure(tmp, env, samples, reps, load):
    """Check cost and latency of both kinds of task on one worker with ``env``'s broker and backend."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.benchmarks.celery_bench_app", "worker", "--pool=prefork",
         "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # The app is built at import from the environment: a producer process of its own per set-up.
    try:
        out = subprocess.run([sys.executable, __file__, "producer", tmp, str(samples), str(reps), str(int(load))],
                             env=env, capture_output=True, text=True)  # fmt: skip
        if out.returncode:
            sys.exit(f"bench_celery: the producer failed:\n{out.stderr}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def producer(tmp, samples, reps, load):
    """The producer's side of ``measure``, in a process whose app has the set-up's broker and backend.

    Returns the figures: check costs (us), latencies (ms), Celery's final
    state, and with ``load`` the store's transactions/s idle and busy.
    """
    from localabort import TaskAborted
    from tests.benchmarks import celery_bench_app as bench

    figures = {
        "ours_check": [bench.check_cost.delay(200_000).get(timeout=120) * 1e6 for _ in range(reps)],
        "theirs_check": [bench.celery_check_cost.delay(2_000).get(timeout=120) * 1e6 for _ in range(reps)],
        "ours": [], "ours_committed": [], "theirs": [],
    }  # fmt: skip
    for _ in range(samples):
        res = bench.see_abort.delay()
        while res.progress is None:
            time.sleep(0.001)
        time.sleep(0.05)  # the abort lands at a random moment of the worker's reads, not just after one
        t0 = time.monotonic()
        res.store.request_abort(res.id)  # what res.abort() does for a running task (then it looks for a queued one)
        t1 = time.monotonic()
        try:
            res.get(timeout=60)
        except TaskAborted as exc:
            figures["ours"].append((exc.partial_result - t0) * 1e3)
            figures["ours_committed"].append((exc.partial_result - t1) * 1e3)
        marker = Path(tmp) / f"started-{time.time_ns()}"
        celery_res = bench.celery_see_abort.delay(str(marker))
        while not marker.exists():
            time.sleep(0.001)
        time.sleep(0.05)
        t0 = time.monotonic()
        celery_res.abort()
        figures["theirs"].append((celery_res.get(timeout=60) - t0) * 1e3)
        figures["final"] = celery_res.state
    if load:
        figures["idle_tps"] = transactions(WINDOW) / WINDOW
        running = [bench.spin.delay() for _ in range(2)]
        while any(r.progress is None for r in running):
            time.sleep(0.01)
        figures["busy_tps"] = transactions(WINDOW) / WINDOW
        figures["connections"] = connections()
        for r in running:
            r.abort()
    return figures


def transactions(seconds):
    """Transactions the store's PostgreSQL database committed in ``seconds`` s (this process's reads aside)."""
    import sqlalchemy as sa

    url = os.environ["BENCH_CELERY_BACKEND"][len("db+") :]
    engine = sa.create_engine(url)
    query = sa.text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        before = conn.execute(query).scalar()
        conn.commit()
        time.sleep(seconds)
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        after = conn.execute(query).scalar()
    engine.dispose()
    return after - before - 2  # the two reads of this count


def _write_loop(url, seconds, counts):
    """One client writing heartbeats (the commonest write of an idle worker process) as fast as it can."""
    from localabort._store import Store

    store = Store.open(url)
    store.register_executor(f"capacity-{os.getpid()}")
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.heartbeat(f"capacity-{os.getpid()}")
        done += 1
    counts.put(done)


def capacity(url, clients=4, seconds=3.0):
    """Heartbeat writes a second this PostgreSQL server took from ``clients`` processes: its ceiling here."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    counts = ctx.Queue()
    procs = [ctx.Process(target=_write_loop, args=(url, seconds, counts)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    total = sum(counts.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def connections():
    """Connections to the store's database now, this process's own aside."""
    import sqlalchemy as sa

    engine = sa.create_engine(os.environ["BENCH_CELERY_BACKEND"][len("db+") :])
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        found = conn.exec_driver_sql(query).scalar()
    engine.dispose()
    return found


def main() -> None:
    short = quick(__doc__, "fewer samples")
    samples, reps = (10, 2) if short else (40, 5)
    setups = [("sqla+sqlite broker, db+sqlite backend", None, None)]
    redis, postgres = os.environ.get("LOCALABORT_TEST_REDIS_URL"), os.environ.get("LOCALABORT_TEST_POSTGRES_URL")
    if redis and postgres:
        setups.append(("Redis broker, db+postgresql backend", redis, f"db+{postgres}"))
    results = []
    for label, broker, backend in setups:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_CELERY_DIR=tmp)
            if broker:
                import redis as redis_client

                redis_client.Redis.from_url(broker).flushdb()
                env.update(BENCH_CELERY_BROKER=broker, BENCH_CELERY_BACKEND=backend)
            results.append((label, measure(tmp, env, samples, reps, load=bool(broker))))

    print(f"On a real Celery worker (prefork -c 2), Python {sys.version.split()[0]}")
    for label, f in results:
        print()
        print(f"{label}:")
        print()
        p50, p99 = statistics.median(f["ours"]), pct(f["ours"], 99)
        check = statistics.median(f["ours_check"])
        table(("figure", "celery.contrib.abortable", "localabort.celery", "target", ""), [
            ("one is_aborted() in the task, us", spread(f["theirs_check"]), spread(f["ours_check"]),
             f"<= {CHECK_US} us", verdict(check <= CHECK_US)),
            (f"abort() called -> task sees it, p50 of {samples}, ms", f"{statistics.median(f['theirs']):.1f}",
             f"{p50:.1f}", f"<= {P50_MS} ms", verdict(p50 <= P50_MS)),
            ("the same, p99, ms", f"{pct(f['theirs'], 99):.1f}", f"{p99:.1f}", f"<= {P99_MS} ms",
             verdict(p99 <= P99_MS)),
            ("of which from the abort's commit, p50 / p99, ms", "", f"{statistics.median(f['ours_committed']):.1f} / "
             f"{pct(f['ours_committed'], 99):.1f}", "", ""),
            ("state after the aborted task returned", f["final"], "ABORTED (never overwritten)", "ABORTED", ""),
        ])  # fmt: skip
        if "idle_tps" in f:
            idle, busy = f["idle_tps"], f["busy_tps"]
            print()
            print(f"Store load on PostgreSQL (transactions/s, {WINDOW:.0f} s windows; 2 worker processes):")
            print()
            table(("worker", "transactions/s", "per worker process", "per running task, above idle"), [
                ("idle", f"{idle:.1f}", f"{idle / 2:.1f}", ""),
                ("2 tasks running (progress reported)", f"{busy:.1f}", f"{busy / 2:.1f}", f"{(busy - idle) / 2:.1f}"),
            ])  # fmt: skip
            print()
            print(f"Connections to the store's database with the 2 tasks running: {f['connections']} "
                  "(the worker's main process, its 2 processes, the producer)")  # fmt: skip
            print()
            print(f"This PostgreSQL server's ceiling here, 4 processes writing heartbeats as fast as they can: "
                  f"{capacity(os.environ['LOCALABORT_TEST_POSTGRES_URL']):,.0f} writes/s")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["producer"]:
        tmp, samples, reps, load = sys.argv[2:]
        print(json.dumps(producer(tmp, int(samples), int(reps), load == "1")))
    else:
        main()
