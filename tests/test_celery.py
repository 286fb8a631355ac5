"""localabort.celery on a real Celery worker (prefork), with the kombu sqla+sqlite broker and db+sqlite backend."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

celery = pytest.importorskip("celery")

from celery.result import AsyncResult  # noqa: E402

from localabort import (  # noqa: E402
    ABORTED,
    FAILURE,
    RETRY,
    STARTED,
    SUCCESS,
    AbortableAsyncResult,
    SoftTimeLimitExceeded,
    TaskAborted,
    TimeLimitExceeded,
    WorkerLost,
)
from localabort._store import Store  # noqa: E402
from localabort.celery import CeleryResult, register  # noqa: E402

from . import celery_app, tasks  # noqa: E402
from .conftest import POSTGRES, ROOT, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One real `celery worker` for the module, stopped with a warm shutdown (SIGTERM) at the end."""
    folder = tmp_path_factory.mktemp("celery")
    app = celery_app.app
    app.conf.broker_url = f"sqla+sqlite:///{folder}/broker.sqlite"
    app.conf.result_backend = f"db+sqlite:///{folder}/results.sqlite"
    log = open(folder / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker", "--pool=prefork", "-c", "2",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, LOCALABORT_CELERY_DIR=str(folder), PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    try:
        first = celery_app.crunch.delay(3)
        assert first.get(timeout=60) == [0, 1, 4], (folder / "worker.log").read_text()
        yield app
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def started(res):
    return res.state == STARTED and res.progress is not None


def test_success_is_stored_in_both_the_store_and_celery(worker):
    res = celery_app.crunch.delay(4)
    assert isinstance(res, CeleryResult)
    assert res.get(timeout=30) == [0, 1, 4, 9]
    assert res.state == SUCCESS and res.progress == (4, 4)
    assert AsyncResult(res.id, app=worker).get(timeout=30) == [0, 1, 4, 9]
    assert celery_app.crunch.store.get(res.id).args_repr == "4"  # kept by the worker's claim and outcome
    hidden = celery_app.crunch.apply_async((2,), argsrepr="(n)")  # Celery's option: the store keeps this text
    assert hidden.get(timeout=30) == [0, 1] and celery_app.crunch.store.get(hidden.id).args_repr == "(n)"


def test_failure_keeps_the_exception_and_traceback(worker):
    res = celery_app.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        res.get(timeout=30)
    assert res.state == FAILURE and "ValueError: boom" in res.store.get(res.id).traceback
    # Celery's backend is written after the store, when the task function has raised.
    wait_for(lambda: AsyncResult(res.id, app=worker).state == FAILURE, what="Celery's backend to say FAILURE")


def test_an_unpicklable_result_fails_the_task_in_the_store_too(worker):
    res = celery_app.unpicklable.delay()
    with pytest.raises(
        (pickle.PicklingError, AttributeError, TypeError), match=r"the result of tests\.tasks\.Unpicklable"
    ):
        res.get(timeout=30)
    assert res.state == FAILURE


def test_abort_of_a_running_task(worker):
    res = celery_app.spin.delay()
    wait_for(lambda: started(res), what="the task to start")
    assert res.abort() is True and res.is_aborted()
    with pytest.raises(TaskAborted) as info:
        res.get(timeout=30)  # the worker reads the store every 20 ms while the task checks
    assert info.value.partial_result >= 1 and res.state == ABORTED


def test_the_abort_is_never_overwritten_by_the_task_return(worker):
    """Celery's own AbortableTask ends SUCCESS here: the task's return overwrites ABORTED."""
    res = celery_app.ticker.delay(30)
    wait_for(lambda: started(res), what="the task to start")
    res.abort()
    with pytest.raises(TaskAborted) as info:
        res.get(timeout=30)
    assert isinstance(info.value.partial_result, int)  # run() returned normally after it saw the abort
    time.sleep(0.5)  # anything the worker wrote late would land by now
    assert res.state == ABORTED and AbortableAsyncResult(res.id, store=res.store).state == ABORTED
    assert AsyncResult(res.id, app=worker).state == ABORTED  # Celery's backend agrees, and never says SUCCESS


def test_abort_of_a_queued_task_ends_it_at_once_and_it_never_runs(worker, tmp_path):
    blockers = [celery_app.spin.delay() for _ in range(2)]  # both worker processes busy
    wait_for(lambda: all(started(b) for b in blockers), what="both workers busy")
    queued = celery_app.touch.delay(str(tmp_path / "ran"))
    assert queued.abort() is True
    assert queued.state == ABORTED  # at once, not when a worker frees up
    with pytest.raises(TaskAborted, match="before it started"):
        queued.get(timeout=5)
    for b in blockers:
        b.abort()
        with pytest.raises(TaskAborted):
            b.get(timeout=30)
    follow = celery_app.crunch.delay(2)  # the queued message has been consumed by now, and skipped
    assert follow.get(timeout=30) == [0, 1]
    wait_for(lambda: AsyncResult(queued.id, app=worker).state == ABORTED, what="Celery's backend to say ABORTED")
    assert not (tmp_path / "ran").exists()


def test_terminate_after_kills_the_worker_child_of_a_task_that_never_checks(worker):
    res = celery_app.deaf.delay(60)
    wait_for(lambda: started(res), what="the task to start")
    assert res.abort(terminate_after=0.3) is True
    with pytest.raises(TaskAborted, match="terminated: still running when the terminate_after"):
        res.get(timeout=30)
    record = res.store.get(res.id)
    assert record.state == ABORTED and record.error.startswith("TaskAborted: task") and record.progress
    assert celery_app.crunch.delay(3).get(timeout=60) == [0, 1, 4]  # Celery replaced the child; work goes on


def test_retries_go_through_celerys_own_retry_with_the_store_saying_retry(worker, tmp_path):
    ledger = tmp_path / "ledger"
    res = celery_app.flaky.delay(2, str(ledger))
    assert res.get(timeout=60) == 2 and res.state == SUCCESS  # the third attempt succeeded
    record = res.store.get(res.id)
    assert record.retries == 2 and len(ledger.read_text().split()) == 3


def test_an_abort_of_a_celery_task_waiting_to_retry_ends_it_and_it_never_runs_again(worker, tmp_path):
    ledger = tmp_path / "ledger"
    res = celery_app.flaky.apply_async((10**9, str(ledger)))
    wait_for(lambda: res.state == RETRY, what="the task to wait for its retry")
    record = res.store.get(res.id)
    assert record.retries >= 1 and record.error.startswith("ConnectionError: attempt")
    res.abort()
    with pytest.raises(TaskAborted):
        res.get(timeout=30)
    ran = len(ledger.read_text().split())
    time.sleep(1.0)  # its next delivery (every 50 ms) finds it ABORTED
    assert len(ledger.read_text().split()) <= ran + 1 and res.state == ABORTED


def test_checkpoint_deep_in_the_stack_ends_the_task_aborted(worker):
    res = celery_app.deep.delay()  # checks only through module-level checkpoint(), 20 calls deep
    wait_for(lambda: started(res), what="the task to start")
    res.abort()
    with pytest.raises(TaskAborted, match="checkpoint"):
        res.get(timeout=30)
    assert res.state == ABORTED


def test_a_tasks_log_and_usage_are_stored_from_a_celery_worker_too(worker):
    res = celery_app.chatty.delay(3, 0.3)  # a line each 0.3 s: the worker stores its log as it runs
    wait_for(lambda: "out 0" in res.logs, what="the log of the running task")
    assert res.state == STARTED
    assert res.get(timeout=30) == 3
    for i in range(3):
        assert f"out {i}\n" in res.logs and f"WARNING tests.chatty: record {i} of {res.id}" in res.logs
    usage = res.usage
    assert usage is not None and usage["worker_pid"] != os.getpid() and usage["peak_rss"] > 0


def test_progress_is_visible_while_the_task_runs(worker):
    res = celery_app.ticker.delay(30)
    first = wait_for(lambda: res.progress, what="progress")[0]
    wait_for(lambda: res.progress[0] > first, what="progress to move")
    res.abort()
    with pytest.raises(TaskAborted):
        res.get(timeout=30)


def test_soft_time_limit_asks_for_an_abort_as_under_executor(worker):
    res = celery_app.limited.delay()  # Limited.soft_time_limit = 0.3
    with pytest.raises(SoftTimeLimitExceeded, match=r"Limited \[.*\] passed its soft_time_limit of 0.3s"):
        res.get(timeout=30)
    assert res.state == ABORTED and res.is_aborted()
    record = res.store.get(res.id)
    assert record.error.startswith("SoftTimeLimitExceeded: ") and record.abort_by == "its soft_time_limit of 0.3s"


def test_memory_limits_ask_and_kill_on_a_celery_worker_as_under_executor(worker):
    from localabort import MemoryLimitExceeded, SoftMemoryLimitExceeded

    res = celery_app.soft_memory.delay()  # CelerySoftMemory.soft_memory_limit = "150MiB"
    with pytest.raises(SoftMemoryLimitExceeded, match=r"used \d+ MiB, past its soft_memory_limit of 150 MiB"):
        res.get(timeout=60)
    assert res.state == ABORTED and "soft_memory_limit of 150 MiB" in res.store.get(res.id).abort_by
    killed = celery_app.hard_memory.delay()  # never checks; CeleryHardMemory.memory_limit = "200MiB"
    with pytest.raises(MemoryLimitExceeded, match=r"used \d+ MiB, past its memory_limit of 200 MiB"):
        killed.get(timeout=60)
    assert killed.store.get(killed.id).state == "FAILURE"
    assert celery_app.crunch.delay(3).get(timeout=60) == [0, 1, 4]  # Celery replaced the child; work goes on


def test_is_aborted_on_a_worker_reads_the_store_at_most_once_a_poll_interval(tmp_path, monkeypatch):
    """Celery's abortable queries its backend on every call; here checks between two reads cost a clock read."""
    from localabort._schema import task_row
    from localabort._store import Store
    from localabort._watch import POLL_INTERVAL, Watch
    from localabort.celery import _Probe

    store = Store(str(tmp_path / "s.sqlite"))
    store.write([task_row("t1", executor_id="e", name="tests.Job", state=STARTED, submitted_at=1.0)])
    watching = Watch(store)
    try:
        watched = watching.add("t1", on_deadline=lambda: None)
        reads = []
        aborting = store.aborting
        monkeypatch.setattr(store, "aborting", lambda ids: reads.append(ids) or aborting(ids))
        monkeypatch.setattr(store, "is_abort_requested", lambda task_id: pytest.fail("a query of its own"))
        probe = _Probe(store, watching, watched, soft_time_limit=None)
        start = time.monotonic()
        assert not any(probe() for _ in range(100_000))
        elapsed = time.monotonic() - start
        assert len(reads) <= elapsed / POLL_INTERVAL + 5  # the watch's thread reads a few times a second too
        store.request_abort("t1")
        wait_for(probe, timeout=5, what="a check to see the abort")
    finally:
        watching.stop()
        store.dispose()


def test_a_store_on_postgresql_shared_by_producer_and_worker(worker, postgres_url):
    res = celery_app.crunch_pg.delay(3)
    assert res.store.url == postgres_url and res.get(timeout=30) == [0, 1, 4]
    spinning = celery_app.spin_pg.delay()
    wait_for(lambda: started(spinning), what="the task to start")
    assert AbortableAsyncResult(spinning.id, store=postgres_url).abort() is True
    with pytest.raises(TaskAborted):
        spinning.get(timeout=30)
    assert spinning.state == ABORTED


def test_register_needs_a_database_store():
    app = celery.Celery("nodb", broker="memory://", backend="rpc://")
    task = register(app, tasks.Crunch)
    with pytest.raises(ValueError, match="result backend 'rpc' is not a database; pass register"):
        task.delay(1)


# -- scale-out: a Redis broker, a PostgreSQL store, several workers -------------------------------------------

REDIS = os.environ.get("LOCALABORT_TEST_REDIS_URL")


def start_worker(folder, env, name, queue="celery", concurrency=2):
    """A real `celery worker` of the scale app, named ``name``, in a process group of its own (to kill it whole)."""
    log = open(folder / f"{name}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.celery_app:scale_app", "worker", "--pool=prefork",
         "-c", str(concurrency), "-n", f"{name}@%h", "-Q", queue, "--without-gossip", "--without-mingle", "-l", "info"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    proc.log, proc.log_path = log, folder / f"{name}.log"
    host = f"{name}@{socket.gethostname()}"
    wait_for(lambda: proc.poll() is not None or (celery_app.scale_app.control.inspect([host], timeout=0.5).ping()),
             timeout=60, what=f"worker {name} to answer a ping")  # fmt: skip
    assert proc.poll() is None, proc.log_path.read_text()
    return proc


def stop_worker(proc, sig=signal.SIGTERM, timeout=30):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc.log.close()


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    """Two real workers (w1, w2: prefork, 2 processes each) on a Redis broker, sharing a PostgreSQL store."""
    if not REDIS or not POSTGRES:
        pytest.skip("no Redis and PostgreSQL servers: set LOCALABORT_TEST_REDIS_URL and LOCALABORT_TEST_POSTGRES_URL "
                    "(.ci/redis.sh and .ci/postgres.sh start them)")  # fmt: skip
    import redis
    import sqlalchemy as sa

    folder = tmp_path_factory.mktemp("scale")
    url = sa.engine.make_url(POSTGRES)
    database = f"localabort_scale_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    store_url = url.set(database=database).render_as_string(hide_password=False)
    redis.Redis.from_url(REDIS).flushdb()
    app = celery_app.scale_app
    app.conf.broker_url, app.conf.result_backend = REDIS, f"db+{store_url}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LOCALABORT_TEST_REDIS_URL=REDIS, LOCALABORT_SCALE_STORE=store_url)
    workers = {}
    try:
        for name in ("w1", "w2"):
            workers[name] = start_worker(folder, env, name)
        yield SimpleNamespace(app=app, store=store_url, folder=folder, env=env, workers=workers)
    finally:
        for proc in workers.values():
            stop_worker(proc)
        cached = Store._open_stores.pop(store_url, None)
        if cached is not None:
            cached.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.dispose()


def holder(res):
    """The pid of the worker process whose claim the task's row names."""
    import sqlalchemy as sa

    record = res.store.get(res.id)
    with res.store.engine.connect() as conn:
        query = sa.text("SELECT pid FROM localabort_executors WHERE id = :id")
        return conn.execute(query, {"id": record.executor_id}).scalar()


def parent(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def test_aborts_by_id_from_anywhere_reach_the_worker_that_runs_the_task(scale):
    runs = [celery_app.s_spin.delay() for _ in range(4)]  # one per worker process: 2 workers x 2
    wait_for(lambda: all(started(r) for r in runs), what="four tasks to start")
    mains = {parent(holder(r)) for r in runs}
    assert mains == {w.pid for w in scale.workers.values()}  # both workers run tasks
    first, second, third, fourth = runs
    assert first.abort() is True  # the producer
    subprocess.run([sys.executable, "-c", "import sys; from localabort import AbortableAsyncResult; "
                    "AbortableAsyncResult(sys.argv[1], store=sys.argv[2]).abort()", second.id, scale.store],
                   check=True, env=scale.env)  # another process  # fmt: skip
    cli = [sys.executable, "-m", "localabort", "abort", scale.store]
    subprocess.run([*cli, third.id], check=True, env=scale.env, capture_output=True)  # the CLI, by id
    subprocess.run([*cli, fourth.id[-8:]], check=True, env=scale.env, capture_output=True)  # by its label
    for res in runs:
        with pytest.raises(TaskAborted):
            res.get(timeout=30)
        assert res.state == ABORTED
    assert celery_app.s_crunch.delay(3).get(timeout=30) == [0, 1, 4]


def test_a_worker_process_killed_mid_task_ends_it_worker_lost(scale):
    res = celery_app.s_deaf.delay(60)
    wait_for(lambda: started(res), what="the task to start")
    os.kill(holder(res), signal.SIGKILL)  # as the OOM killer would
    # Celery's failure handler says so, or, first, any process in the dead one's PID namespace (its recovery).
    with pytest.raises(WorkerLost, match=r"its worker process died|\(pid \d+ on .*\) died before this task finished"):
        res.get(timeout=30)
    assert res.state == FAILURE
    assert celery_app.s_crunch.delay(2).get(timeout=30) == [0, 1]  # Celery started another process


def test_a_time_limit_ends_the_task_time_limit_exceeded(scale):
    res = celery_app.s_hard_limit.delay(60)  # time_limit=1: Celery kills its process
    with pytest.raises(TimeLimitExceeded, match="ran past its time_limit"):
        res.get(timeout=30)
    assert res.state == FAILURE and res.store.get(res.id).error.startswith("TimeLimitExceeded")


def test_with_acks_late_a_task_whose_process_died_runs_again_and_stays_abortable(scale):
    res = celery_app.s_redelivered.delay()
    wait_for(lambda: started(res), what="the task to start")
    first = running_in(scale.app, res.id)  # the row names no process: Celery, not the store, brings it back
    os.kill(first, signal.SIGKILL)
    again = wait_for(lambda: running_in(scale.app, res.id) not in (None, first) and running_in(scale.app, res.id),
                     timeout=30, what="the task to be delivered again")  # fmt: skip
    assert res.state == STARTED and again != first
    assert res.store.get(res.id).retries == 1  # the row says it runs again
    res.abort()
    with pytest.raises(TaskAborted):
        res.get(timeout=30)


def running_in(app, task_id):
    """The pid of the worker process that runs ``task_id``, as the workers answer (``inspect().active()``)."""
    for active in (app.control.inspect(timeout=1).active() or {}).values():
        for task in active:
            if task["id"] == task_id:
                return task["worker_pid"]
    return None


def test_a_worker_killed_whole_has_its_tasks_ended_by_the_other_workers(scale):
    """No get() and no producer: w1 and w2's processes find the dead worker's silence and end its task."""
    doomed = start_worker(scale.folder, scale.env, "w3", queue="w3")
    try:
        res = celery_app.s_deaf.apply_async((60,), queue="w3")
        wait_for(lambda: started(res), what="the task to start on w3")
        assert parent(holder(res)) == doomed.pid
        os.killpg(doomed.pid, signal.SIGKILL)  # the main process and its children: a host that went away
        doomed.wait()
        # Asked while no process runs it: kept, not lost. (The other workers share the dead one's PID namespace,
        # so they may have ended the task already: then the abort says it had finished.)
        asked = res.abort()
        record = wait_for(lambda: (r := res.store.get(res.id)).state == FAILURE and r, timeout=30,
                          what="the other workers to end the task")  # fmt: skip
        assert record.error.startswith("WorkerLost") and record.abort_requested == asked
    finally:
        stop_worker(doomed)


def test_a_warm_shutdown_aborts_the_running_tasks_that_ask_for_it(scale):
    leaving = start_worker(scale.folder, scale.env, "w4", queue="w4")
    try:
        res = celery_app.s_graceful.apply_async(queue="w4")  # register(..., abort_on_warm_shutdown=True)
        wait_for(lambda: started(res), what="the task to start on w4")
        os.kill(leaving.pid, signal.SIGTERM)  # Celery's warm shutdown waits for running tasks
        leaving.wait(timeout=30)
        record = res.store.get(res.id)
        assert record.state == ABORTED and record.abort_by.startswith("warm shutdown of w4@")
    finally:
        stop_worker(leaving)


def test_an_async_task_on_a_celery_worker_is_cancelled_at_its_await_by_an_abort(worker):
    res = celery_app.async_sleeper.delay()
    wait_for(lambda: started(res), what="the task to start")
    res.abort()
    with pytest.raises(TaskAborted):
        res.get(timeout=30)  # not an hour
    caught = celery_app.async_catcher.delay()
    wait_for(lambda: started(caught), what="the task to start")
    caught.abort()
    with pytest.raises(TaskAborted) as info:
        caught.get(timeout=30)
    assert info.value.partial_result == "partial" and caught.state == ABORTED
