"""The handles: AbortableFuture alone, and AbortableAsyncResult from another OS process."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from localabort import (
    ABORTED,
    FAILURE,
    PENDING,
    STARTED,
    SUCCESS,
    AbortableAsyncResult,
    AbortableFuture,
    Executor,
    StoreError,
    TaskAborted,
    UnknownTask,
    WorkerLost,
)  # fmt: skip
from localabort._store import Store

from . import tasks
from .conftest import pool, started, wait_for


def test_future_without_executor():
    fut = AbortableFuture("t1")
    assert (fut.id, fut.state, fut.progress, fut.is_aborted(), fut.abort()) == ("t1", PENDING, None, False, False)
    assert fut.cancel() and fut.cancelled()


@pytest.mark.parametrize("ask", ["state", "progress", "ready", "abort", "is_aborted", "get"])
def test_async_result_of_unknown_task_is_an_error_not_pending(tmp_path, ask):
    """Where Celery answers PENDING for ever, an id no executor handed out raises UnknownTask, naming id and store."""
    path = str(tmp_path / "s.sqlite")
    Store(path).dispose()
    res = AbortableAsyncResult("nope", store=path)  # cheap and lazy: nothing is read yet
    with pytest.raises(UnknownTask, match=rf"^no task nope in {path}$"):
        value = getattr(res, ask)
        value() if callable(value) else value
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM localabort_tasks").fetchone() == (0,)


def test_async_result_on_a_store_path_with_a_typo_is_an_error_not_pending(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        AbortableAsyncResult("nope", store=str(tmp_path / "bacth.sqlite"))
    assert not (tmp_path / "bacth.sqlite").exists()


def test_async_result_reads_outcomes(executor):
    ok = executor.submit(tasks.Crunch, 3)
    bad = executor.submit(tasks.Fail, "nope")
    concurrent.futures.wait([ok, bad], timeout=30)
    store = executor.store.path
    assert AbortableAsyncResult(ok.id, store=store).get(timeout=5) == [0, 1, 4]
    assert AbortableAsyncResult(ok.id, store=store).progress == (3, 3)
    with pytest.raises(ValueError, match="nope") as info:
        AbortableAsyncResult(bad.id, store=store).get(timeout=5)
    assert "raise ValueError" in str(info.value.__cause__)
    assert AbortableAsyncResult(bad.id, store=store).failed()


def test_async_result_has_celerys_result_info_and_traceback(executor):
    ok = executor.submit(tasks.Crunch, 3)
    bad = executor.submit(tasks.Fail, "nope")
    concurrent.futures.wait([ok, bad], timeout=30)
    good, failed = (AbortableAsyncResult(f.id, store=executor.store.path) for f in (ok, bad))
    assert (good.id, good.result, good.info, good.traceback) == (ok.id, [0, 1, 4], [0, 1, 4], None)
    assert isinstance(failed.result, ValueError) and str(failed.info) == "nope"  # not raised: returned
    assert failed.traceback.startswith("Traceback") and "raise ValueError(message)" in failed.traceback


OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from localabort import AbortableAsyncResult, TaskAborted
    res = AbortableAsyncResult(sys.argv[1], store=sys.argv[2])
    print(res.state, res.progress is not None, flush=True)
    print(res.abort(), res.is_aborted(), flush=True)
    try:
        res.get(timeout=30)
    except TaskAborted as exc:
        print(res.state, len(exc.partial_result) > 0, flush=True)
    """
)


def test_another_process_watches_and_aborts_a_running_task(executor):
    fut = executor.submit(tasks.Crunch, 10**9)
    wait_for(lambda: getattr(executor.store.get(fut.id), "progress", None) is not None, what="stored progress")
    out = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, fut.id, executor.store.path],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == [f"{STARTED} True", "True True", f"{ABORTED} True"]
    with pytest.raises(TaskAborted):
        fut.result(timeout=30)
    assert fut.state == ABORTED and fut.is_aborted()


def test_external_abort_of_a_queued_task(start_method, store_path, tmp_path):
    with pool(store_path, start_method, 1) as ex:
        blocker = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
        queued = ex.submit(tasks.Crunch, 3)
        wait_for(lambda: started(blocker) and ex.store.get(queued.id) is not None)
        assert AbortableAsyncResult(queued.id, store=store_path).abort() is True
        with pytest.raises(TaskAborted):
            queued.result(timeout=30)
        (tmp_path / "go").touch()
    assert AbortableAsyncResult(queued.id, store=store_path).state == ABORTED
    assert AbortableAsyncResult(blocker.id, store=store_path).state == SUCCESS


def test_a_watcher_learns_within_seconds_that_the_executor_died(start_batch, store_path):
    """get() opened before the executor is SIGKILLed: its task ends FAILURE (WorkerLost), and get() says so."""
    proc, info = start_batch(store_path, "fork", "Ticker")
    res = AbortableAsyncResult(info["ids"][0], store=store_path)  # opened while the executor lives
    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(res_get(res)))
    waiter.start()
    os.killpg(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    waiter.join(timeout=30)
    assert outcome and isinstance(outcome[0], WorkerLost), outcome
    assert time.monotonic() - killed < 12  # SILENT (5 s) of silence, then the next look (every 1 s)
    assert res.state == FAILURE


def res_get(res):
    try:
        return res.get(timeout=30)
    except BaseException as exc:
        return exc


def test_a_pending_task_holds_two_objects_for_the_garbage_collector(store_path):
    """No condition (seven objects) until a thread waits: a batch's full collections scan a third as much.

    What is left: the future and its job (and, before Python 3.11, the future's ``__dict__``)."""
    import gc

    with Executor(max_workers=1, store=store_path) as ex:
        gate = ex.submit(time.sleep, 30)
        wait_for(lambda: gate.running(), what="the worker busy")
        gc.collect()
        before = len(gc.get_objects())
        futures = [ex.submit(divmod, i, 7) for i in range(2000)]
        gc.collect()
        held = (len(gc.get_objects()) - before) / len(futures)
        ex.abort_all()
        gate.abort(terminate_after=0)
    assert held < 3.5, f"{held} tracked objects a pending task"
    assert all(f._made is None for f in futures), "a future no thread waited on made its condition"


def test_futures_settle_for_every_way_of_waiting_while_the_executor_settles_them(store_path):
    """The executor settles a future alone until a thread makes its condition: no waiter is ever missed.

    Threads wait in each of ``concurrent.futures``' ways, at every moment
    of a batch: before, while and after its futures settle.
    """
    called = collections.Counter()
    with Executor(max_workers=2, store=store_path) as ex:
        futures = [ex.submit(divmod, i, 7) for i in range(3000)]

        def results():
            return [f.result(timeout=60) for f in futures[::-7]]

        def waited():
            done, _ = concurrent.futures.wait(futures[1::5], timeout=60)
            return len(done)

        def completed():
            return sum(1 for _ in concurrent.futures.as_completed(futures[2::3], timeout=60))

        def callbacks():
            for f in futures[::11]:
                f.add_done_callback(lambda f: called.update([f.id]))
            return True

        with concurrent.futures.ThreadPoolExecutor(4) as waiters:
            answers = [waiters.submit(fn) for fn in (results, waited, completed, callbacks)]
            got = [a.result(timeout=120) for a in answers]
    assert got == [[divmod(i, 7) for i in range(3000)][::-7], len(futures[1::5]), len(futures[2::3]), True]
    assert set(called.values()) == {1} and len(called) == len(futures[::11])
    assert all(f.done() and not f.running() for f in futures)


def test_a_finalizer_that_cancels_a_future_while_another_makes_its_condition_does_not_deadlock():
    """The lock that makes futures' conditions is reentrant: a garbage collection set off in it may run a
    finalizer (an abandoned ``map`` iterator's) that cancels a future of the same thread."""
    from localabort import _future

    mine, other = AbortableFuture("t-mine"), AbortableFuture("t-other")
    with _future._MAKING:  # where a collection would run the finalizer
        assert other.cancel() and other.cancelled()
        assert mine._condition is not None


def test_a_ctrl_c_that_leaves_the_futures_lock_held_is_undone():
    """On Python 3.9 a Ctrl-C may land between a ``with`` block's acquire and its block (bpo-29988)."""
    from localabort import _future

    _future._MAKING.acquire()
    _future.release_making()
    future = AbortableFuture("t-after")
    done = threading.Thread(target=future.set_result, args=(1,))  # the manager's part, in another thread
    done.start()
    done.join(timeout=10)
    assert future.result(timeout=0) == 1


def test_a_failed_result_does_not_keep_its_future_alive_in_a_cycle():
    """As ``Future.result``: the traceback of what it raises holds no reference to the future."""
    import gc
    import weakref

    future = AbortableFuture("t-failed")
    future.set_exception(ValueError("no"))
    ref = weakref.ref(future)
    gc.disable()
    try:
        with pytest.raises(ValueError, match="no"):
            future.result()
        del future
        assert ref() is None
    finally:
        gc.enable()


def test_a_future_wakes_every_thread_that_waits_for_it_and_forgets_those_that_gave_up():
    """Its condition keeps its waiters in a list (no 760-byte deque a pending task): every waiter still wakes."""
    from localabort._future import AbortableFuture

    future = AbortableFuture("t-waited")
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.01)  # a waiter that gave up is removed
    assert future._condition._waiters == []
    got = []
    threads = [threading.Thread(target=lambda: got.append(future.result(timeout=30))) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(future._condition._waiters) == 5, what="five threads waiting")
    future.set_result(42)
    for thread in threads:
        thread.join(timeout=30)
    assert got == [42] * 5 and future._condition._waiters == []
