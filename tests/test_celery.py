"""localabort.celery on a real Celery worker (prefork), with the kombu sqla+sqlite broker and db+sqlite backend."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

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
)
from localabort.celery import CeleryResult, register  # noqa: E402

from . import celery_app, tasks  # noqa: E402
from .conftest import ROOT, wait_for  # noqa: E402


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


def test_is_aborted_on_a_worker_reads_the_store_at_most_once_a_poll_interval(tmp_path, monkeypatch):
    """Celery's abortable queries its backend on every call; here calls between two polls cost no query."""
    from localabort import _store
    from localabort.celery import POLL_INTERVAL, _Probe

    store = _store.Store(str(tmp_path / "s.sqlite"))
    reads = []
    monkeypatch.setattr(store, "is_abort_requested", lambda task_id: reads.append(task_id) or False)
    probe = _Probe(store, "t1", soft_time_limit=None)
    start = time.monotonic()
    calls = sum(1 for _ in range(100_000) if not probe())
    elapsed = time.monotonic() - start
    assert calls == 100_000 and 1 <= len(reads) <= elapsed / POLL_INTERVAL + 1
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
