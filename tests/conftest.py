"""Fixtures shared by the tests: every executor test runs under each start method."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from localabort import Executor

from . import leaks

# A shell starts a background job (``pytest ... &``) with SIGINT ignored, and the scripts the tests start would
# inherit that: their Ctrl-C tests would see nothing happen. The suite runs as at a terminal, however started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["pytester"]
#: Loaded by the processes of a ``write_faults`` run at their start, never by the suite.
collect_ignore = ["faults_site"]

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(scope="session", autouse=True)
def session_helpers():
    """Start first what ``multiprocessing`` keeps for the session, so that no test counts it as its leak."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    if "forkserver" in START_METHODS:
        forkserver.ensure_running()
    yield


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail a test that leaves a child process, a thread, a file descriptor or a named semaphore (``tests.leaks``).

    Mark a test ``@pytest.mark.leaks_ok("why")`` to exempt it (a test of what a leak does).
    """
    if request.node.get_closest_marker("leaks_ok") is not None:
        yield
        return
    before = leaks.snapshot()
    yield
    from localabort._store import Store

    for store in list(Store._open_stores.values()):  # the per-process cache keeps its connections by design
        store.dispose()
    found = leaks.leaked(before)
    if found:
        pytest.fail(f"{request.node.nodeid} left behind: " + "; ".join(found), pytrace=False)


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store.sqlite")


POSTGRES = os.environ.get("LOCALABORT_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url():
    """The URL of the PostgreSQL test database, emptied of localabort's tables; skips the test without one."""
    if not POSTGRES:
        pytest.skip("no PostgreSQL server: set LOCALABORT_TEST_POSTGRES_URL (.ci/postgres.sh starts one)")
    import sqlalchemy as sa

    from localabort._schema import metadata
    from localabort._store import Store

    cached = Store._open_stores.pop(POSTGRES, None)  # its schema is about to go: the next open makes it again
    if cached is not None:
        cached.dispose()
    engine = sa.create_engine(POSTGRES)
    metadata.drop_all(engine)
    engine.dispose()
    return POSTGRES


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A store for contract tests (test_store, test_watch): each test runs on both databases."""
    from localabort._store import Store

    store = Store(str(tmp_path / "s.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url"))
    yield store
    store.dispose()


@pytest.fixture
def executor(start_method, store_path):
    with Executor(max_workers=2, store=store_path, mp_context=start_method) as ex:
        yield ex
        ex.abort_all()  # a failed test may leave a task spinning; teardown must not wait for it


@contextlib.contextmanager
def pool(store, start_method, max_workers=2, **options):
    """An executor for tests whose tasks may never end: if the test fails, abort them, then terminate them.

    (``with Executor(...)`` would wait for them for ever, as ``concurrent.futures`` executors do.)
    """
    ex = Executor(max_workers=max_workers, store=store, mp_context=start_method, **options).__enter__()
    try:
        yield ex
    except BaseException:
        ex.abort_all()
        ex.shutdown(wait=False)
        if not ex._scheduler.stopped.wait(5):
            ex._manager.terminate()
        raise
    finally:
        ex.__exit__(None, None, None)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def started(future) -> bool:
    """The task runs and has reported progress, so it is inside ``run``."""
    return future.progress is not None


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def start_batch():
    """Start tests/scripts/batch.py in its own process group; every group is killed at teardown."""
    procs = []

    def start(store, start_method, task, seconds=30.0, style="with", how="result"):
        script = str(ROOT / "tests" / "scripts" / "batch.py")
        proc = subprocess.Popen(
            [sys.executable, script, store, start_method, task, str(seconds), style, how],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip
        procs.append(proc)
        if not select.select([proc.stdout], [], [], 60)[0]:
            pytest.fail("the batch script did not start within 60 s")
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the batch script did not start: {proc.communicate()[1]}")
        return proc, json.loads(line)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()  # and close its pipes
