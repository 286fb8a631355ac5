"""The executor with real children on a real SQLite file, under every start method."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import itertools
import multiprocessing
import os
import pickle
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest

import localabort
from localabort import (
    ABORTED,
    FAILURE,
    PENDING,
    RETRY,
    STARTED,
    SUCCESS,
    AbortableAsyncResult,
    AbortableFuture,
    Executor,
    TaskAborted,
    WorkerLost,
)  # fmt: skip
from localabort._store import Store

from . import tasks
from .conftest import ROOT, pool, started, wait_for

#: What pickling a lambda raises, by Python version; the future raises the same, as ProcessPoolExecutor's does.
PICKLING_ERRORS = (pickle.PicklingError, AttributeError, TypeError)


def stored(executor, future):
    return executor.store.get(future.id)


# -- the outcome rules (docs/states.md), row by row ---------------------------


def test_run_returned_without_abort_is_success(executor):
    fut = executor.submit(tasks.Crunch, 5)
    assert fut.result(timeout=30) == [0, 1, 4, 9, 16]
    assert fut.state == SUCCESS and fut.successful() and not fut.failed()
    assert fut.progress == (5, 5)
    record = stored(executor, fut)
    assert record.state == SUCCESS and record.progress == (5, 5)


def test_the_store_keeps_each_calls_arguments_as_text(executor):
    big = executor.submit(tasks.Crunch, n=3)
    small = executor.submit(divmod, 7, "x" * 1000)
    assert big.result(timeout=30) == [0, 1, 4]
    assert stored(executor, big).args_repr == "n=3"
    concurrent.futures.wait([small], timeout=30)
    text = stored(executor, small).args_repr
    assert text.startswith("7, 'xxx") and text.endswith("xxx'") and len(text) < 200
    secret = executor.apply_async(tasks.Crunch, (2,), {}, argsrepr="'***'")  # Celery's name: a secret kept out
    assert secret.result(timeout=30) == [0, 1] and stored(executor, secret).args_repr == "'***'"


def test_the_arguments_are_stored_for_tasks_cancelled_while_their_first_write_is_under_way(executor, tmp_path):
    """A cancel's own write may commit before the executor's first write of the task: it carries the text too."""
    gate = tmp_path / "go"
    busy = [executor.submit(tasks.plain_wait_for_file, str(gate)) for _ in range(2)]
    queued = [executor.submit(divmod, i, 7) for i in range(300)]
    for future in queued[::2]:
        future.cancel()
    gate.touch()
    concurrent.futures.wait([*busy, *queued], timeout=60)
    assert {stored(executor, f).args_repr for f in queued} == {f"{i}, 7" for i in range(300)}


def test_task_ids_are_uuids_of_version_7_in_the_order_they_were_made(executor):
    """Time-ordered ids keep the store's id index growing at one end (``_states.new_id``)."""
    ids = [executor.submit(abs, -i).id for i in range(200)]
    assert all(str(uuid.UUID(task_id)) == task_id and uuid.UUID(task_id).version == 7 for task_id in ids)
    milliseconds = [uuid.UUID(task_id).int >> 80 for task_id in ids]  # the first 48 bits
    assert milliseconds == sorted(milliseconds) and abs(milliseconds[0] - time.time() * 1000) < 60_000
    assert len(set(ids)) == len(ids)


def test_run_raised_is_failure_with_child_traceback(executor):
    fut = executor.submit(tasks.Fail, "boom")
    with pytest.raises(ValueError, match="boom") as info:
        fut.result(timeout=30)
    assert fut.state == FAILURE and fut.failed()
    assert "raise ValueError(message)" in str(info.value.__cause__)
    assert stored(executor, fut).state == FAILURE


def test_abort_before_start_never_runs(start_method, store_path, tmp_path):
    with pool(store_path, start_method, 1) as ex:
        blocker = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
        queued = ex.submit(tasks.Crunch, 3)
        assert queued.state == PENDING
        assert queued.abort() is True
        with pytest.raises(TaskAborted):
            queued.result(timeout=30)
        assert queued.state == ABORTED and queued.is_aborted()
        assert ex.store.get(queued.id).state == ABORTED  # stored before the future completed
        (tmp_path / "go").touch()
        blocker.result(timeout=30)
    assert queued.progress is None  # it never ran


def test_abort_seen_by_run_is_aborted_with_partial_result(executor):
    fut = executor.submit(tasks.Crunch, 10**9)
    wait_for(lambda: started(fut), what="Crunch to start")
    assert fut.state == STARTED
    assert fut.abort() is True
    with pytest.raises(TaskAborted) as info:
        fut.result(timeout=30)
    partial = info.value.partial_result
    assert partial and partial == [i * i for i in range(len(partial))]
    assert fut.state == ABORTED and not fut.successful() and not fut.failed()
    record = stored(executor, fut)
    assert record.state == ABORTED and record.abort_requested


def test_task_raising_task_aborted_is_aborted(executor):
    fut = executor.submit(tasks.RaiseAborted)
    with pytest.raises(TaskAborted, match="gave up on my own"):
        fut.result(timeout=30)
    assert fut.state == ABORTED


def test_checkpoint_from_deep_helper_is_aborted(executor):
    fut = executor.submit(tasks.DeepCheckpoint)
    wait_for(lambda: started(fut))
    fut.abort()
    with pytest.raises(TaskAborted) as info:
        fut.result(timeout=30)
    assert info.value.task_id == fut.id
    assert fut.state == ABORTED


def test_abort_never_checked_ends_success_and_stays_requested(executor, tmp_path):
    go = tmp_path / "go"
    fut = executor.submit(tasks.WaitForFile, str(go))
    wait_for(lambda: started(fut))
    assert fut.abort() is True
    go.touch()
    assert fut.result(timeout=30) == "returned without checking"
    assert fut.state == SUCCESS and fut.is_aborted()
    record = stored(executor, fut)
    assert record.state == SUCCESS and record.abort_requested


@pytest.mark.parametrize("how", ["exit", "kill", "segfault"])
def test_dead_child_fails_only_its_task_and_is_replaced(executor, how):
    others = [executor.submit(tasks.Crunch, 50) for _ in range(4)]
    doomed = executor.submit(tasks.Die, how)
    after = [executor.submit(tasks.add, i, 1) for i in range(6)]
    with pytest.raises(WorkerLost, match=r"worker .* running tests\.tasks\.Die") as info:
        doomed.result(timeout=30)
    assert isinstance(info.value, concurrent.futures.process.BrokenProcessPool)  # what PPE users catch
    assert doomed.state == FAILURE and stored(executor, doomed).state == FAILURE
    assert [f.result(timeout=30) for f in after] == list(range(1, 7))
    assert all(f.result(timeout=30) == [i * i for i in range(50)] for f in others)
    assert executor.submit(tasks.add, 2, 2).result(timeout=30) == 4  # the pool still works


# -- abort(terminate_after=...): one task stopped for good -----------------------


def test_terminate_after_kills_a_task_that_never_checks_and_the_batch_goes_on(start_method, store_path):
    with pool(store_path, start_method) as ex:
        deaf = ex.submit(tasks.Deaf, 60)
        wait_for(lambda: started(deaf))
        pid = next(slot.pid for slot in ex._scheduler.slots if slot.job is not None and slot.job.id == deaf.id)
        rest = [ex.submit(tasks.add, i, 1) for i in range(8)]
        asked = time.monotonic()
        assert deaf.abort(terminate_after=0.5) is True
        why = r"terminated: still running when the terminate_after of 0\.5s its abort gave it ran out"
        with pytest.raises(TaskAborted, match=why) as info:
            deaf.result(timeout=30)
        assert time.monotonic() - asked >= 0.5  # it was asked first, and given its time
        assert info.value.task_id == deaf.id and deaf.state == ABORTED
        assert [f.result(timeout=30) for f in rest] == list(range(1, 9))  # the rest of the batch goes on
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # its worker is gone, and replaced:
        assert ex.submit(tasks.add, 2, 2).result(timeout=30) == 4
        record = stored(ex, deaf)
        assert record.state == ABORTED and record.error.startswith(f"TaskAborted: task {deaf.id} terminated")
        assert record.terminate_at is not None and "AbortableFuture.abort()" in record.abort_by
        assert record.progress is not None  # what it reported before it was killed is kept


def test_terminate_after_spares_a_task_that_honours_the_abort_in_time(executor):
    fut = executor.submit(tasks.Ticker, 30)
    wait_for(lambda: started(fut))
    worker = next(slot.pid for slot in executor._scheduler.slots if slot.job is not None)
    fut.abort(terminate_after=10)
    with pytest.raises(TaskAborted) as info:
        fut.result(timeout=5)  # it checks every 10 ms: long before 10 s
    assert isinstance(info.value.partial_result, int) and "terminated" not in str(info.value)
    assert worker in [slot.pid for slot in executor._scheduler.slots]  # nothing was killed


def test_terminate_after_zero_kills_now_and_the_earliest_time_holds(executor):
    fut = executor.submit(tasks.Deaf, 60)
    wait_for(lambda: started(fut))
    fut.abort(terminate_after=60)
    fut.abort(terminate_after=0)  # sooner: it holds
    fut.abort(terminate_after=30)  # later: ignored
    with pytest.raises(TaskAborted, match=r"terminated: at once, as its abort asked \(terminate_after=0\)"):
        fut.result(timeout=10)
    with pytest.raises(ValueError, match="terminate_after must be"):
        fut.abort(terminate_after=-1)


def test_the_executors_terminate_after_is_the_grace_of_an_abort_that_names_none(store_path):
    with pool(store_path, "fork", terminate_after=0.3) as ex:
        graced, second, polite = ex.submit(tasks.Deaf, 60), ex.submit(tasks.Deaf, 60), ex.submit(tasks.Ticker, 30)
        wait_for(lambda: started(graced) and started(second))
        graced.abort()  # names no grace: the executor's 0.3 s
        with pytest.raises(TaskAborted, match=r"terminated: still running when the terminate_after of 0\.3s"):
            graced.result(timeout=30)
        assert ex.store.get(graced.id).terminate_at is not None
        wait_for(lambda: started(polite))
        assert ex.abort_all() == 2  # the grace holds for abort_all() too; a task that checks is never killed
        with pytest.raises(TaskAborted, match="terminated"):
            second.result(timeout=30)
        with pytest.raises(TaskAborted) as info:
            polite.result(timeout=30)
        assert "terminated" not in str(info.value)
    with pool(store_path, "fork") as ex:
        call = ex.apply_async(tasks.Deaf, (60,), terminate_after=0)  # the call's own, with none on the executor
        plain = ex.submit(tasks.Deaf, 0.5)
        wait_for(lambda: started(call) and started(plain))
        call.abort()
        with pytest.raises(TaskAborted, match="terminated: at once"):
            call.result(timeout=30)
        plain.abort()  # no grace anywhere: only asked, and it runs to its end
        assert plain.result(timeout=30) > 0 and plain.state == "SUCCESS"
    with pytest.raises(ValueError, match="terminate_after must be"):
        Executor(store=store_path, terminate_after=-1)


def test_terminate_after_from_another_handle_goes_through_the_store(start_method, store_path):
    with pool(store_path, start_method) as ex:
        fut = ex.submit(time.sleep, 60)  # a plain callable: never checks
        wait_for(lambda: fut.state == STARTED)
        assert AbortableAsyncResult(fut.id, store=store_path).abort(terminate_after=0.2) is True
        with pytest.raises(TaskAborted, match="terminated"):
            fut.result(timeout=30)
        assert AbortableAsyncResult(fut.id, store=store_path).state == ABORTED


# -- retries: Celery's names, and an abort that always ends them -------------------


def attempts(ledger):
    """The times (wall clock) at which each attempt of a task began, from its ledger file."""
    return [float(line) for line in ledger.read_text().split()] if ledger.exists() else []


def test_autoretry_until_it_succeeds_and_every_attempt_is_recorded(executor, tmp_path):
    ledger = tmp_path / "ledger"
    fut = executor.apply_async(tasks.Flaky, (2, str(ledger)), default_retry_delay=0.5)
    wait_for(lambda: getattr(stored(executor, fut), "state", None) == RETRY, what="the stored retry")
    record = stored(executor, fut)
    assert (record.state, record.retries, record.error) == (RETRY, 1, "ConnectionError: attempt 0 failed")
    assert record.eta is not None and not fut.done()  # the future waits for the last attempt
    assert fut.result(timeout=30) == 2 and fut.state == SUCCESS
    record = stored(executor, fut)
    assert (record.state, record.retries, record.error, record.eta) == (SUCCESS, 2, None, None)
    assert len(attempts(ledger)) == 3


def test_retry_by_self_raises_the_last_error_after_the_last_attempt(executor, tmp_path):
    ledger = tmp_path / "ledger"
    fut = executor.submit(tasks.RetryBySelf, 0.01, str(ledger))
    with pytest.raises(OSError, match="busy"):
        fut.result(timeout=30)
    assert fut.state == FAILURE and len(attempts(ledger)) == 3  # max_retries = 2: three attempts
    record = stored(executor, fut)
    assert (record.retries, record.error) == (2, "OSError: busy")
    overridden = executor.apply_async(tasks.Flaky, (5,), max_retries=1, default_retry_delay=0.01)
    with pytest.raises(ConnectionError, match="attempt 1 failed"):  # per call, as apply_async options
        overridden.result(timeout=30)
    with pytest.raises(TypeError, match="unknown option"):
        executor.apply_async(tasks.Flaky, max_retry=1)


def test_a_task_waiting_to_retry_holds_no_worker(start_method, store_path, tmp_path):
    with pool(store_path, start_method, max_workers=1) as ex:
        waiting = ex.apply_async(tasks.Flaky, (5, str(tmp_path / "ledger")), default_retry_delay=60)
        wait_for(lambda: waiting.state == RETRY, what="the retry")
        assert ex.submit(tasks.add, 2, 3).result(timeout=30) == 5  # the one worker is free meanwhile
        assert waiting.abort() is True


@pytest.mark.parametrize("how", ["future", "another process", "command line", "abort_all"])
def test_an_abort_ends_a_task_waiting_to_retry_at_once_and_it_never_runs_again(executor, tmp_path, how):
    ledger = tmp_path / "ledger"
    fut = executor.apply_async(tasks.Flaky, (5, str(ledger)), default_retry_delay=2)
    wait_for(lambda: fut.state == RETRY, what="the retry")
    parked = time.monotonic()
    if how == "future":
        fut.abort()
    elif how == "another process":
        AbortableAsyncResult(fut.id, store=executor.store.path).abort()
    elif how == "command line":
        out = subprocess.run([sys.executable, "-m", "localabort", "abort", executor.store.path, fut.id],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.stdout.strip().endswith("(tests.tasks.Flaky, RETRY)"), out
    else:
        executor.abort_all()
    with pytest.raises(TaskAborted, match="aborted while it waited to retry"):
        fut.result(timeout=max(0.1, parked + 1.9 - time.monotonic()))  # at once: before its next attempt was due
    time.sleep(max(0.0, parked + 2.3 - time.monotonic()))
    assert len(attempts(ledger)) == 1 and stored(executor, fut).state == ABORTED


def test_an_abort_during_an_attempt_ends_it_aborted_whatever_it_raised(executor, tmp_path):
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    fut = executor.submit(tasks.FlakyAfterFile, str(go), str(ledger))
    wait_for(lambda: started(fut))
    fut.abort()  # it never checks: it raises ConnectionError, which would be retried
    go.touch()
    with pytest.raises(TaskAborted, match=r"its attempt ended asking for a retry \(ConnectionError: reset"):
        fut.result(timeout=30)
    time.sleep(0.2)
    assert len(attempts(ledger)) == 1 and stored(executor, fut).state == ABORTED


def test_an_abort_racing_the_retries_always_wins(start_method, store_path, tmp_path):
    """Aborts land at random moments: while an attempt runs, as its retry is scheduled, as the next one starts."""
    with pool(store_path, start_method, max_workers=2) as ex:
        for i in range(30):
            ledger = tmp_path / f"ledger{i}"
            fut = ex.apply_async(tasks.Flaky, (10**9, str(ledger)), default_retry_delay=0.002)
            time.sleep(random.uniform(0, 0.05))
            fut.abort()
            asked = time.time()
            with pytest.raises(TaskAborted):
                fut.result(timeout=30)
            ended = len(attempts(ledger))
            time.sleep(0.05)
            assert len(attempts(ledger)) == ended, f"round {i}: an attempt started after the task ended"
            assert sum(t > asked for t in attempts(ledger)) <= 1, f"round {i}: attempts went on after the abort"
            assert ex.store.get(fut.id).state == ABORTED


def test_terminate_after_applies_to_the_running_attempt(executor, tmp_path):
    fut = executor.submit(tasks.FlakyAfterFile, str(tmp_path / "never"), str(tmp_path / "ledger"))
    wait_for(lambda: started(fut))
    fut.abort(terminate_after=0)
    with pytest.raises(TaskAborted, match="terminated"):
        fut.result(timeout=30)
    assert len(attempts(tmp_path / "ledger")) == 1


def test_a_key_waiting_to_retry_is_in_flight_and_one_that_failed_runs_again(executor, tmp_path):
    ledger = tmp_path / "ledger"
    first = executor.apply_async(tasks.Flaky, (1, str(ledger)), key="k", default_retry_delay=0.5)
    wait_for(lambda: first.state == RETRY, what="the retry")
    assert executor.apply_async(tasks.Flaky, (1, str(ledger)), key="k") is first  # in flight: the same future
    assert first.result(timeout=30) == 1
    failed = executor.apply_async(tasks.RetryBySelf, (0.01,), key="r")
    failed.exception(timeout=30)
    again = executor.apply_async(tasks.RetryBySelf, (0.01,), key="r")
    assert again is not failed and isinstance(again.exception(timeout=30), OSError)  # it ran again


# -- nothing module-level crosses fork() ------------------------------------------


def test_a_replacement_worker_exits_when_asked_as_an_original_one_does(start_method, store_path):
    """A replacement is started after the executor registered itself: it must not inherit it.

    Before the fix, under fork, the replacement ran the parent's exit hook, waited for the
    dead copy of the executor, and was killed only after the grace period (5 s per shutdown).
    """
    ex = Executor(max_workers=1, store=store_path, mp_context=start_method)
    original = ex._scheduler.slots[0]
    with pytest.raises(WorkerLost):
        ex.submit(tasks.die_now).result(timeout=30)
    assert ex.submit(tasks.return_zero).result(timeout=30) == 0
    replacement = ex._scheduler.slots[0]
    assert replacement is not original
    ex.shutdown()
    assert (original.exitcode, replacement.exitcode) == (-9, 0)  # exited on its own, not killed


def test_delay_on_a_replacement_worker_raises_the_clear_error(start_method, store_path):
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as ex:
        assert "needs an active executor" in ex.submit(tasks.DelayInside).result(timeout=30)
        with pytest.raises(WorkerLost):
            ex.submit(tasks.die_now).result(timeout=30)
        assert "needs an active executor" in ex.submit(tasks.DelayInside).result(timeout=30)


def test_a_process_forked_beside_a_live_executor_exits(store_path):
    """Any child forked while an executor runs (a plain Process, another pool's worker) exits at once."""
    ctx = multiprocessing.get_context("fork")
    with Executor(max_workers=1, store=store_path, mp_context="fork") as ex:
        child = ctx.Process(target=tasks.return_zero)
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2


# -- what ProcessPoolExecutor users bring -----------------------------------------


def test_initializer_runs_in_every_worker_before_its_tasks(start_method, store_path):
    with Executor(2, store_path, mp_context=start_method, initializer=tasks.remember, initargs=("ready",)) as ex:
        seen = [f.result(timeout=30) for f in [ex.submit(tasks.remembered) for _ in range(6)]]
    assert {value for value, _ in seen} == {"ready"}


def test_a_failing_initializer_stops_the_executor(start_method, store_path):
    """As in ProcessPoolExecutor: every worker would fail the same way, so the executor breaks."""
    ex = Executor(2, store_path, mp_context=start_method, initializer=tasks.refuse_to_start)
    broken = "refuse_to_start raised in a worker: ValueError: no connection"
    try:
        future = ex.submit(tasks.add, 1, 1)
    except concurrent.futures.BrokenExecutor as exc:  # broken already: the initializer was quick
        assert broken in str(exc)
    else:
        with pytest.raises(concurrent.futures.BrokenExecutor, match=broken):
            future.result(timeout=60)
        assert future.state == FAILURE and ex.store.get(future.id).state == FAILURE
    wait_for(lambda: ex._scheduler.broken is not None, what="the executor to break")
    with pytest.raises(concurrent.futures.BrokenExecutor, match=broken):
        ex.submit(tasks.add, 1, 1)
    ex.shutdown()


KEPT_AFTER_SHUTDOWN = """
import sys
from concurrent.futures import BrokenExecutor
from multiprocessing import resource_tracker
from localabort import Executor
from tests import tasks
if __name__ == "__main__":
    ex = Executor(2, sys.argv[1], mp_context=sys.argv[2], initializer=tasks.refuse_to_start)
    try:
        ex.submit(tasks.add, 1, 1).result(timeout=60)
    except BrokenExecutor:
        pass
    ex.shutdown()
    resource_tracker._resource_tracker._stop()  # now, with ``ex`` still referenced: it reports what leaked
    print("stopped")
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_shutdown_releases_the_workers_semaphores_while_the_executor_is_still_referenced(start_method, store_path):
    """GH-104090, as CPython's FailingInitializerResourcesTest checks it: none leaks to the resource tracker."""
    done = subprocess.run([sys.executable, "-c", KEPT_AFTER_SHUTDOWN, store_path, start_method], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert done.returncode == 0 and done.stdout == "stopped\n", done.stderr
    assert "leaked semaphore" not in done.stderr, done.stderr


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_max_tasks_per_child_replaces_each_worker_after_that_many_tasks(start_method, store_path):
    with Executor(1, store_path, mp_context=start_method, max_tasks_per_child=2) as ex:
        pids = [ex.submit(os.getpid).result(timeout=30) for _ in range(5)]
        futures = [ex.submit(tasks.add, i, 1) for i in range(7)]  # also when they queue up, sent ahead or not
        assert [f.result(timeout=60) for f in futures] == list(range(1, 8))
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_max_tasks_per_child_as_in_process_pool_executor(store_path):
    with pytest.raises(ValueError, match="incompatible with the 'fork' start method"):
        Executor(1, store_path, mp_context="fork", max_tasks_per_child=3)
    with pytest.raises(ValueError, match="greater than 0"):
        Executor(1, store_path, max_tasks_per_child=0)
    ex = Executor(1, store_path, max_tasks_per_child=3)
    assert ex._manager.ctx.get_start_method() == "spawn"  # the default becomes spawn, as there
    ex.shutdown()


def test_constructor_errors_name_the_fix(store_path):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(0, store_path)
    with pytest.raises(TypeError, match="second argument is the store; pass the context as mp_context"):
        Executor(1, multiprocessing.get_context("spawn"))


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers_end_every_task_aborted(start_method, store_path, how):
    ex = Executor(2, store_path, mp_context=start_method)
    running = [ex.submit(tasks.Deaf, 30) for _ in range(2)]
    queued = [ex.submit(tasks.Deaf, 30) for _ in range(3)]
    wait_for(lambda: all(started(f) for f in running), what="the tasks to start")
    getattr(ex, how)()
    for future in running + queued:
        with pytest.raises(TaskAborted, match="terminated"):
            future.result(timeout=0)
    assert {r.state for r in ex.store.tasks([f.id for f in running + queued])} == {ABORTED}
    assert all(slot.ended() for slot in ex._scheduler.slots)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tasks.add, 1, 1)


@pytest.mark.parametrize("how", ["del", "nowait"])
def test_an_executor_left_without_shutdown_finishes_its_work_and_lets_the_script_exit(start_method, tmp_path, how):
    store = str(tmp_path / "s.sqlite")
    script = str(ROOT / "tests" / "scripts" / "dropped.py")
    done = subprocess.run(
        [sys.executable, script, store, start_method, how], capture_output=True, text=True, timeout=90,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert all(os.path.exists(f"{store}.{i}") for i in range(4))
    assert {r.state for r in Store.open(store).tasks()} == {SUCCESS}


# -- futures, the store, and the standard API ----------------------------------


def test_final_state_is_stored_before_the_future_completes(executor):
    seen = []
    store = executor.store
    futures = [executor.submit(tasks.add, i, i) for i in range(30)]
    for fut in futures:
        fut.add_done_callback(lambda f: seen.append(store.get(f.id).state))
    concurrent.futures.wait(futures, timeout=30)
    wait_for(lambda: len(seen) == 30)
    assert seen == [SUCCESS] * 30


def test_wait_and_as_completed(executor):
    futures = [executor.submit(tasks.add, i, 0) for i in range(20)]
    done, not_done = concurrent.futures.wait(futures, timeout=30)
    assert len(done) == 20 and not not_done
    again = [executor.submit(tasks.add, i, 0) for i in range(20)]
    assert sorted(f.result() for f in concurrent.futures.as_completed(again, timeout=30)) == list(range(20))


def test_as_completed_sees_cancelled_futures(start_method, store_path, tmp_path):
    with pool(store_path, start_method, 1) as ex:
        blocker = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
        queued = ex.submit(tasks.add, 1, 1)
        assert queued.cancel() is True
        assert queued.cancelled() and queued.state == ABORTED
        assert list(concurrent.futures.as_completed([queued], timeout=5)) == [queued]
        assert ex.store.get(queued.id).state == ABORTED
        assert blocker.cancel() is False or blocker.cancelled()
        (tmp_path / "go").touch()


def test_cancel_running_task_refused(executor, tmp_path):
    fut = executor.submit(tasks.WaitForFile, str(tmp_path / "go"))
    wait_for(lambda: started(fut))
    assert fut.cancel() is False
    (tmp_path / "go").touch()
    assert fut.result(timeout=30) == "returned without checking"


def test_abort_of_finished_task_returns_false(executor):
    fut = executor.submit(tasks.add, 1, 2)
    assert fut.result(timeout=30) == 3
    assert fut.abort() is False
    assert not fut.is_aborted() and not stored(executor, fut).abort_requested


def test_plain_callable_runs_and_is_abortable_only_before_start(executor, tmp_path):
    fut = executor.submit(tasks.plain_wait_for_file, str(tmp_path / "go"))
    wait_for(lambda: fut.state == STARTED)
    assert fut.abort() is True  # recorded, but a plain callable cannot see it
    (tmp_path / "go").touch()
    assert fut.result(timeout=30) == "plain done" and fut.state == SUCCESS
    assert executor.submit(tasks.outside_helpers).result(timeout=30) == (None, False)


def test_apply_async_task_id(executor):
    fut = executor.apply_async(tasks.add, (2, 3), task_id="my-id")
    assert fut.id == "my-id" and fut.get(timeout=30) == 5
    assert executor.store.get("my-id").state == SUCCESS


def test_task_knows_its_id_and_is_current(executor):
    fut = executor.submit(tasks.WhoAmI)
    assert fut.result(timeout=30) == (True, fut.id, fut.id, ())


def test_is_aborted_of_another_task(executor):
    target = executor.submit(tasks.Spin)
    wait_for(lambda: started(target))
    assert executor.submit(tasks.OtherAborted, target.id).result(timeout=30) is False
    target.abort()
    assert executor.submit(tasks.OtherAborted, target.id).result(timeout=30) is True
    with pytest.raises(TaskAborted):
        target.result(timeout=30)


def test_delay_and_apply_async_use_the_innermost_executor(start_method, tmp_path):
    with Executor(max_workers=1, store=str(tmp_path / "outer.sqlite"), mp_context=start_method) as outer:
        with Executor(max_workers=1, store=str(tmp_path / "inner.sqlite"), mp_context=start_method) as inner:
            fut = tasks.Crunch.delay(3)
            assert fut.result(timeout=30) == [0, 1, 4]
            assert inner.store.get(fut.id) is not None and outer.store.get(fut.id) is None
        fut = tasks.Crunch.apply_async((2,), task_id="outer-task")
        assert fut.result(timeout=30) == [0, 1] and outer.store.get("outer-task").state == SUCCESS
    with pytest.raises(RuntimeError, match=r"Crunch.delay\(\) needs an active executor.*with Executor"):
        tasks.Crunch.delay(1)


def test_map_in_order_with_chunks(executor):
    assert list(executor.map(tasks.add, range(10), range(10))) == [2 * i for i in range(10)]
    assert list(executor.map(tasks.add, range(250), itertools.repeat(1), chunksize=100)) == list(range(1, 251))
    assert list(executor.map(tasks.Crunch, [1, 2, 3], chunksize=2)) == [[0], [0, 1], [0, 1, 4]]


def test_map_with_buffersize_takes_only_what_it_needs_from_an_endless_iterable(executor):
    taken = []

    def endless():
        for i in itertools.count():
            taken.append(i)
            yield i

    results = executor.map(abs, endless(), buffersize=4)
    assert [next(results) for _ in range(10)] == list(range(10))
    assert len(taken) <= 10 + 4 + 1
    results.close()  # the futures still in flight are cancelled


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_keeps_no_result_the_caller_dropped(executor, chunksize):
    """CPython issue 14406: the iterator must not hold the last result."""
    import gc
    import weakref

    for obj in executor.map(tasks.Box, range(7), chunksize=chunksize):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def test_map_raises_at_the_failing_item(executor):
    results = executor.map(tasks.Fail, ["a", "b"])
    with pytest.raises(ValueError, match="a"):
        next(results)


def test_map_timeout(executor, tmp_path):
    results = executor.map(tasks.plain_wait_for_file, [str(tmp_path / "never")], timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    executor.abort_all()
    (tmp_path / "never").touch()


def test_abort_all(start_method, store_path):
    with pool(store_path, start_method, 2) as ex:
        running = [ex.submit(tasks.Spin) for _ in range(2)]
        queued = [ex.submit(tasks.Spin) for _ in range(5)]
        wait_for(lambda: all(started(f) for f in running))
        assert ex.abort_all() == 7
        for fut in running + queued:
            with pytest.raises(TaskAborted):
                fut.result(timeout=30)
        assert all(f.progress is None for f in queued)
    states = {r.state for r in Store.open(store_path).tasks()}
    assert states == {ABORTED}


def test_abort_races_started_and_progress_writes(start_method, store_path):
    """An abort is never lost to a later STARTED or progress write (Celery's abortable loses it)."""
    with pool(store_path, start_method, 2) as ex:
        futures = []
        for i in range(40):
            fut = ex.submit(tasks.Spin)
            futures.append(fut)
            if i % 4 == 0:
                assert fut.abort() is True  # races the PENDING write and dispatch
            elif i % 4 == 1:
                wait_for(lambda f=fut: f.state == STARTED)
                assert fut.abort() is True  # races STARTED and the first progress writes
            else:
                wait_for(lambda f=fut: started(f))
                assert fut.abort() is True  # progress flows while the abort lands
        for fut in futures:
            with pytest.raises(TaskAborted):
                fut.result(timeout=30)
    store = Store.open(store_path)
    records = store.tasks()
    assert len(records) == 40
    assert all(r.state == ABORTED and r.abort_requested for r in records)


def test_shutdown_waits_then_refuses_new_work(start_method, store_path):
    ex = Executor(max_workers=2, store=store_path, mp_context=start_method)
    futures = [ex.submit(tasks.Crunch, 200) for _ in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() and f.state == SUCCESS for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tasks.add, 1, 1)
    assert all(s.ended() for s in ex._scheduler.slots)


def test_shutdown_cancel_futures(start_method, store_path, tmp_path):
    ex = Executor(max_workers=1, store=store_path, mp_context=start_method)
    running = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
    wait_for(lambda: started(running))
    queued = [ex.submit(tasks.add, i, i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    # As in ProcessPoolExecutor: the one job the busy worker holds next (sent ahead, or about to be) runs;
    # the rest are cancelled.
    for f in queued[1:]:
        with pytest.raises(concurrent.futures.CancelledError):
            f.result(timeout=0)
        assert f.cancelled() and f.state == ABORTED
    (tmp_path / "go").touch()
    assert running.result(timeout=30) == "returned without checking"
    assert queued[0].result(timeout=30) == 0
    ex._scheduler.stopped.wait(30)
    states = [r.state for r in Store.open(store_path).tasks(f.id for f in queued)]
    assert sorted(states) == [ABORTED] * 4 + [SUCCESS]


def test_temporary_store_is_removed_at_shutdown(start_method):
    with Executor(max_workers=1, mp_context=start_method) as ex:
        path = ex.store.path
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2
        assert os.path.exists(path)
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))


def test_store_is_shared_and_reused(start_method, store_path):
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as first:
        one = first.submit(tasks.add, 1, 1)
        assert one.result(timeout=30) == 2
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as second:
        two = second.submit(tasks.add, 2, 2)
        assert two.result(timeout=30) == 4
    ids = {r.id for r in Store.open(store_path).tasks()}
    assert ids == {one.id, two.id}


def test_unpicklable_argument_fails_that_future_only(executor):
    fut = executor.submit(tasks.add, threading.Lock(), 2)  # a lambda would go by value; a lock goes nowhere
    with pytest.raises(PICKLING_ERRORS, match=r"cannot send tests.tasks.add to a worker: .*lock.*picklable"):
        fut.result(timeout=5)
    assert fut.state == FAILURE and stored(executor, fut).state == FAILURE
    assert executor.submit(tasks.add, 1, 2).result(timeout=30) == 3


def test_unpicklable_result_fails_with_a_clear_error(executor):
    fut = executor.submit(tasks.Unpicklable)
    with pytest.raises(PICKLING_ERRORS, match=r"the result of tests\.tasks\.Unpicklable cannot be pickled"):
        fut.result(timeout=30)
    assert executor.submit(tasks.add, 1, 2).result(timeout=30) == 3


def test_an_aborted_task_whose_partial_result_cannot_be_pickled_says_so(executor):
    fut = executor.submit(tasks.KeepsALock)
    wait_for(lambda: started(fut))
    fut.abort()
    with pytest.raises(TaskAborted) as info:
        fut.result(timeout=30)
    message = str(info.value)
    assert "its partial result, a lock, cannot be pickled" in message and "TaskAborted" not in message
    assert info.value.partial_result is None and info.value.task_id == fut.id
    assert fut.progress == (3, 10) and stored(executor, fut).progress == (3, 10)  # the last progress is kept
    assert stored(executor, fut).error.startswith("TaskAborted: task") and "cannot be pickled" in message


def test_not_a_task(executor):
    with pytest.raises(TypeError, match="is not a task"):
        executor.submit(42)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_workers"):
        Executor(max_workers=0)


def test_future_is_a_concurrent_future(executor):
    fut = executor.submit(tasks.add, 1, 1)
    assert isinstance(fut, concurrent.futures.Future) and isinstance(fut, AbortableFuture)
    assert isinstance(executor, concurrent.futures.Executor)
    assert fut.status == fut.state
    fut.result(timeout=30)
    assert fut.ready() and fut.exception() is None
    assert issubclass(localabort.TaskAborted, concurrent.futures.CancelledError)


def test_an_executor_on_postgresql_is_aborted_from_another_handle(start_method, postgres_url):
    with pool(postgres_url, start_method, 2) as ex:
        assert ex.submit(tasks.Crunch, 3).result(timeout=30) == [0, 1, 4]
        fut = ex.submit(tasks.Spin)
        wait_for(lambda: started(fut))
        assert subprocess.run(
            [sys.executable, "-c", "import sys; from localabort import AbortableAsyncResult as R; "
             "sys.exit(0 if R(sys.argv[1], store=sys.argv[2]).abort() else 1)", fut.id, postgres_url],
            timeout=60,
        ).returncode == 0  # fmt: skip
        with pytest.raises(TaskAborted):
            fut.result(timeout=30)
    assert AbortableAsyncResult(fut.id, store=postgres_url).state == ABORTED


# -- a key runs at most once at a time ------------------------------------------------


def test_the_same_key_twice_in_one_executor_is_one_task(executor, tmp_path):
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    first = executor.apply_async(tasks.Ledger, (str(ledger), "first", str(go)), key="row-1")
    second = executor.apply_async(tasks.Ledger, (str(ledger), "second"), key="row-1")  # the same work, in flight
    assert second is first
    go.touch()
    assert first.result(timeout=30) == "first" and ledger.read_text().count("\n") == 1


SECOND_BATCH = """
import sys
from localabort import Executor
from tests import tasks
store, ledger = sys.argv[1:3]
with Executor(max_workers=1, store=store, mp_context="spawn") as ex:
    future = ex.apply_async(tasks.Ledger, (ledger, "from the second script"), key="row-1")
    print(future.result(timeout=60), future.state, future.id)
"""


def test_a_key_in_flight_in_another_process_is_followed_not_run(start_method, store_path, tmp_path):
    """Two copies of a batch script on one store: the second follows the first's task to its outcome."""
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    with pool(store_path, start_method, 1) as ex:
        first = ex.apply_async(tasks.Ledger, (str(ledger), "from the first script", str(go)), key="row-1")
        wait_for(lambda: ledger.exists(), what="the first task to run")
        second = subprocess.Popen(
            [sys.executable, "-c", SECOND_BATCH, store_path, str(ledger)], stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip
        wait_for(lambda: len(ex.store.tasks()) == 2, what="the second script's task")
        assert second.poll() is None  # it waits for the first
        go.touch()
        assert first.result(timeout=30) == "from the first script"
        out, _ = second.communicate(timeout=60)
    value, state, follower = out.rsplit(" ", 2)
    assert (value, state) == ("from the first script", SUCCESS)  # the outcome of the task it followed
    assert ex.store.get(follower.strip()).state == SUCCESS and ledger.read_text().count("\n") == 1


def _race(store, ledger, barrier, key):
    barrier.wait()
    with Executor(max_workers=1, store=store) as ex:
        ex.apply_async(tasks.Ledger, (ledger, "raced"), key=key).result(timeout=60)


def test_two_scripts_racing_for_one_key_run_it_once(store_path, tmp_path):
    """Both submit before either has written its row: the store's claim lets one run, and the other follows."""
    Executor(max_workers=1, store=store_path).shutdown()  # the store exists, so the race is for the key alone
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):
        ledger, barrier = tmp_path / f"ledger-{round_}", ctx.Barrier(2)
        procs = [ctx.Process(target=_race, args=(store_path, str(ledger), barrier, f"k{round_}")) for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(90)
        assert [proc.exitcode for proc in procs] == [0, 0]
        assert ledger.read_text().count("\n") == 1, f"round {round_}: the key ran twice"


@pytest.mark.timeout(60)
def test_many_short_tasks_with_kilobytes_each_way_never_block_the_pipes(store_path):
    """Calls held ahead never fill a worker's pipe: a full one blocked the manager's send, so its reading of the
    worker's replies, so the worker (127 calls of 4 KB ahead did, before ``AHEAD_BYTES``)."""
    line = "x" * 8000
    with Executor(max_workers=2, store=store_path, mp_context="fork") as ex:
        futures = [ex.submit(str.upper, line) for _ in range(4000)]
        assert all(future.result(timeout=20) == "X" * 8000 for future in futures)


@pytest.mark.timeout(60)
def test_calls_and_results_larger_than_a_pipe_never_block_it(store_path):
    """A call bigger than a pipe holds goes to an idle worker only: sent ahead to a busy one, it blocked the
    manager's send until that worker read it, while the worker waited for the manager to read its big reply."""
    data = os.urandom(300_000)
    with Executor(max_workers=2, store=store_path, mp_context="fork") as ex:
        futures = [ex.submit(bytes.upper, data) for _ in range(200)]
        assert all(future.result(timeout=20) == data.upper() for future in futures)
