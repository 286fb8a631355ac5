"""A worker process's watch over its running tasks' aborts (``localabort._watch``), on SQLite and PostgreSQL.

The PostgreSQL runs hear of aborts through LISTEN/NOTIFY; they need
``LOCALABORT_TEST_POSTGRES_URL`` (``.ci/postgres.sh``) and say they were skipped without it.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from localabort import FAILURE, STARTED, _watch
from localabort._schema import executors, task_row
from localabort._store import Store
from localabort._watch import FALLBACK, POLL_INTERVAL, Watch, watch

from .conftest import ROOT, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def new_watch():
    """Start a ``Watch`` of a store; every one started is stopped at teardown."""
    started = []

    def make(store):
        started.append(Watch(store))
        return started[-1]

    yield make
    for w in started:
        w.stop()


def running(store, task_id, executor_id="elsewhere"):
    store.write([task_row(task_id, executor_id=executor_id, name="tests.Job", state=STARTED, submitted_at=1.0)])


def test_an_abort_from_another_process_sets_the_flag(store, new_watch):
    running(store, "t1")
    watched = new_watch(store).add("t1", on_deadline=lambda: None)
    assert watched.aborted is False
    subprocess.run([sys.executable, "-m", "localabort", "abort", store.url, "t1"], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    wait_for(lambda: watched.aborted, timeout=10, what="the watch to see the abort")
    assert watched.terminate_at is None


def test_checks_read_the_store_only_when_due_and_see_the_abort_themselves(store, new_watch, monkeypatch):
    """A task's checks renew the flag in its own thread (a watch thread waits on the GIL of a task that spins)."""
    running(store, "t1")
    w = new_watch(store)
    watched = w.add("t1", on_deadline=lambda: None)
    w._stop.set()  # the watch's thread ends: from here only the checks read
    w._thread.join()
    reads = []
    aborting = store.aborting
    monkeypatch.setattr(store, "aborting", lambda ids: reads.append(ids) or aborting(ids))

    def check():  # what is_aborted() does on a worker (localabort.celery._Probe)
        now = time.monotonic()
        if now >= w.next_look:
            w.look(now)
        return watched.aborted

    start = time.monotonic()
    while time.monotonic() - start < 0.1:
        check()
    if store.engine.dialect.name == "postgresql":
        assert len(reads) == 1  # no notification, no query but the first: a select on the listening socket
    else:
        assert 1 <= len(reads) <= 0.1 / POLL_INTERVAL + 1  # one query per POLL_INTERVAL, however many checks
    store.request_abort("t1", terminate_after=60)  # on PostgreSQL, committed with its notification
    wait_for(check, timeout=5, what="a check to see the abort")
    assert watched.terminate_at == pytest.approx(time.time() + 60, abs=5)
    if store.engine.dialect.name == "postgresql":
        assert len(reads) == 1  # the notification named the task and its deadline: no query for it
        running(store, "t2")
        other = w.add("t2", on_deadline=lambda: None)
        store.request_abort_all()  # one notification for any number of tasks: then a read
        wait_for(lambda: check() and other.aborted, timeout=5, what="a check to see the abort of all")
        assert reads[-1] == ["t1", "t2"]
    else:
        assert reads[-1] == ["t1"]


def test_an_abort_asked_before_the_task_was_added_is_seen_at_once(store, new_watch):
    running(store, "t1")
    store.request_abort("t1")
    assert new_watch(store).add("t1", on_deadline=lambda: None).aborted


def test_terminate_after_calls_on_deadline_once_it_passes(store, new_watch):
    running(store, "t1")
    calls = []
    new_watch(store).add("t1", on_deadline=lambda: calls.append(time.time()))
    asked = time.time()
    store.request_abort("t1", terminate_after=0.3)
    wait_for(lambda: calls, timeout=10, what="on_deadline")
    assert calls[0] >= asked + 0.3


def test_a_lost_notification_costs_latency_not_the_abort(store, new_watch, monkeypatch):
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no notifications: the checks read every POLL_INTERVAL")
    running(store, "t1")
    w = new_watch(store)
    watched = w.add("t1", on_deadline=lambda: None)
    w._stop.set()  # the watch's thread ends: from here only the checks read
    w._thread.join()
    monkeypatch.setattr(w._listener, "pending", lambda: [])  # as behind a pooler that drops LISTEN
    store.request_abort("t1")

    def check():
        now = time.monotonic()
        if now >= w.next_look:
            w.look(now)
        return watched.aborted

    wait_for(check, timeout=10 * FALLBACK, what="the fallback read")  # without it: never


def test_a_removed_task_is_no_longer_read(store, new_watch):
    running(store, "t1")
    w = new_watch(store)
    watched = w.add("t1", on_deadline=lambda: None)
    w.remove(watched)
    store.request_abort("t1")
    time.sleep(0.3)
    assert watched.aborted is False


def test_the_watch_keeps_its_process_registered_and_ends_the_tasks_of_dead_ones(store, new_watch):
    import sqlalchemy as sa

    w = new_watch(store)
    columns = (executors.c.hostname, executors.c.pid, executors.c.flushed_at)
    query = sa.select(*columns).where(executors.c.id == w.executor_id)
    with store.engine.connect() as conn:
        first = conn.execute(query).one()
    assert (first.hostname, first.pid) == (socket.gethostname(), os.getpid())

    def renewed():
        with store.engine.connect() as conn:
            return conn.execute(query).one().flushed_at > first.flushed_at

    wait_for(renewed, timeout=5, what="the registration to be renewed")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with store.engine.begin() as conn:  # a worker process that died long ago, with a task it never finished
        conn.execute(executors.insert().values(id="dead", hostname=socket.gethostname(), pid=int(gone.stdout),
                                               started_at=1.0, flushed_at=1.0))  # fmt: skip
    running(store, "orphan", executor_id="dead")
    wait_for(lambda: store.get("orphan").state == FAILURE, timeout=10, what="the watch to end the orphan")
    assert store.get("orphan").error.startswith("WorkerLost")


def _child_watch(store_url, conn):
    conn.send(watch(Store.open(store_url)).executor_id)


def test_a_forked_child_starts_a_watch_of_its_own(store):
    mine = watch(store).executor_id
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_watch, args=(store.url, child))
    try:
        proc.start()
        theirs = parent.recv()
        proc.join()
        assert theirs != mine and watch(store).executor_id == mine
    finally:  # this process's watch lives as long as the process: stop it, as a worker's exit does
        _watch._watches.pop(store.url).stop()
        proc.close()
        parent.close()
        child.close()


def test_a_notification_names_its_task_and_deadline_whatever_the_id():
    from localabort._listen import ANY, parse, payload

    assert parse(payload("t1", None)) == ("t1", None)
    assert parse(payload("an id with spaces", 12.5)) == ("an id with spaces", 12.5)
    assert parse(payload(ANY, None)) == (ANY, None)
    assert parse("not one of ours") == (ANY, None)  # still an abort: read the store
