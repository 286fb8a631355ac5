"""asyncio: awaiting futures and results off the loop, cancellations that abort, ``async with`` exits."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from localabort import ABORTED, AbortableAsyncResult, Executor, TaskAborted, UnknownTask

from . import tasks
from .conftest import pool, started, wait_for


async def open_when_started(gate, futures):
    """Create ``gate`` once every future's task runs: it happens only if the loop turns while they are awaited."""
    while not all(started(f) for f in futures):
        await asyncio.sleep(0.005)
    gate.touch()


def test_await_a_future_gives_its_result_or_raises_without_blocking_the_loop(start_method, store_path, tmp_path):
    gate = tmp_path / "go"

    async def main(ex):
        assert await ex.submit(tasks.add, 2, 3) == 5
        with pytest.raises(ValueError, match="no 1"):
            await ex.submit(tasks.Fail, "no 1")
        waiting = ex.submit(tasks.WaitForFile, str(gate))
        opener = asyncio.ensure_future(open_when_started(gate, [waiting]))
        assert await waiting == "returned without checking"  # a blocked loop would never open the gate
        await opener

    with pool(store_path, start_method) as ex:
        asyncio.run(main(ex))


def test_a_cancelled_await_aborts_the_running_task(start_method, store_path):
    with pool(store_path, start_method) as ex:
        future = asyncio.run(cancel_await_once_started(ex.submit(tasks.Spin)))
        with pytest.raises(TaskAborted):
            future.result(timeout=30)
        assert future.state == ABORTED and future.is_aborted()
        assert ex.store.get(future.id).state == ABORTED


def test_a_cancelled_await_gives_a_task_that_never_checks_the_executors_terminate_after(start_method, store_path):
    with pool(store_path, start_method, terminate_after=0.2) as ex:
        future = asyncio.run(cancel_await_once_started(ex.submit(tasks.Deaf, 60)))
        with pytest.raises(TaskAborted, match=r"terminated: still running when the terminate_after of 0\.2s"):
            future.result(timeout=30)
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2  # a new worker took the killed one's place


async def _await(future):
    return await future


async def cancel_await_once_started(future):
    """Await ``future`` in an asyncio task of its own, and cancel that once ``future``'s task runs; ``future``."""
    waiting = asyncio.ensure_future(_await(future))
    await asyncio.sleep(0)  # the awaiting task runs up to its await: a task cancelled before it ran awaited nothing
    while not started(future):
        await asyncio.sleep(0.005)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    return future


def test_a_cancelled_await_of_a_queued_task_ends_it_unrun(store_path, tmp_path):
    ledger = tmp_path / "ran"

    async def main(ex):
        blocker = ex.submit(tasks.Spin)
        queued = ex.submit(tasks.Ledger, str(ledger), 1)
        waiting = asyncio.ensure_future(_await(queued))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        blocker.abort()
        return queued

    with pool(store_path, "fork", max_workers=1) as ex:
        queued = asyncio.run(main(ex))
        with pytest.raises(TaskAborted):
            queued.result(timeout=30)
        assert queued.state == ABORTED and ex.store.get(queued.id).state == ABORTED
    assert not ledger.exists()  # it never ran


def test_await_a_future_of_an_executor_shut_down_gives_what_result_gives(store_path):
    ex = Executor(max_workers=1, store=store_path)
    future = ex.submit(tasks.add, 1, 2)
    ex.shutdown()
    assert asyncio.run(_await(future)) == 3


def test_await_a_result_by_id_reads_the_store_off_the_loop(start_method, store_path, tmp_path):
    gate = tmp_path / "go"

    async def main(ex):
        waiting = ex.submit(tasks.WaitForFile, str(gate))
        opener = asyncio.ensure_future(open_when_started(gate, [waiting]))
        value = await AbortableAsyncResult(waiting.id, store=store_path)
        await opener
        with pytest.raises(UnknownTask):
            await AbortableAsyncResult("no-such-task", store=store_path)
        return value

    with pool(store_path, start_method) as ex:
        assert asyncio.run(main(ex)) == "returned without checking"


def test_a_cancelled_await_of_a_result_by_id_aborts_the_task(store_path):
    async def main(ex):
        future = ex.submit(tasks.Spin)
        while not started(future):
            await asyncio.sleep(0.005)
        waiting = asyncio.ensure_future(_await(AbortableAsyncResult(future.id, store=store_path)))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return future

    with pool(store_path, "fork") as ex:
        future = asyncio.run(main(ex))
        with pytest.raises(TaskAborted):
            future.result(timeout=30)


def test_async_with_waits_for_the_batch_off_the_loop(start_method, store_path, tmp_path):
    gate = tmp_path / "go"

    async def main():
        async with Executor(max_workers=2, store=store_path, mp_context=start_method) as ex:
            futures = [ex.submit(tasks.WaitForFile, str(gate)) for _ in range(2)]
            opener = asyncio.ensure_future(open_when_started(gate, futures))
        await opener  # it opened the gate while the exit waited
        return futures

    futures = asyncio.run(main())
    assert [f.result(timeout=0) for f in futures] == ["returned without checking"] * 2


def test_a_cancellation_in_or_at_the_end_of_async_with_aborts_the_batch(start_method, store_path):
    made = []

    async def block(cancel_inside):
        async with Executor(max_workers=2, store=store_path, mp_context=start_method) as ex:
            made.append([ex.submit(tasks.Spin) for _ in range(3)])
            if cancel_inside:
                await asyncio.sleep(3600)  # cancelled here: the block ends by the cancellation

    async def main(cancel_inside):
        running = asyncio.ensure_future(block(cancel_inside))
        await asyncio.sleep(0)
        while not made or not started(made[-1][0]):
            await asyncio.sleep(0.005)
        running.cancel()  # inside the block, or while its exit waits
        with pytest.raises(asyncio.CancelledError):
            await running

    for cancel_inside in (True, False):
        asyncio.run(main(cancel_inside))
        futures = made[-1]
        assert all(f.done() for f in futures)  # the exit waited for every task to end
        assert {f.state for f in futures} == {ABORTED}


def test_wrap_future_cancels_a_queued_task_and_leaves_a_running_one(store_path):
    """What CPython hooks: ``cancel()`` of the executor's future, whose meaning concurrent.futures fixes."""

    async def main(ex):
        running = ex.submit(tasks.Spin)
        ex.submit(tasks.add, 0, 0)  # sent ahead to the busy worker: running already, as in ProcessPoolExecutor
        queued = ex.submit(tasks.add, 1, 1)
        while not started(running):
            await asyncio.sleep(0.005)
        for future in (running, queued):
            wrapped = asyncio.wrap_future(future)
            await asyncio.sleep(0)
            wrapped.cancel()
            await asyncio.sleep(0.05)
        return running, queued

    with pool(store_path, "fork", max_workers=1) as ex:
        running, queued = asyncio.run(main(ex))
        assert queued.cancelled() and queued.state == ABORTED
        assert not running.done()  # runs on: only ``await future`` aborts a running task
        running.abort()
        wait_for(running.done, what="the spinner's end")
        assert running.state == ABORTED
        assert {ex.store.get(f.id).state for f in (running, queued)} == {ABORTED}


def test_await_from_a_loop_in_another_thread(store_path):
    """A future completed on the executor's thread wakes a loop running in any thread."""
    with pool(store_path, "fork") as ex:
        with concurrent.futures.ThreadPoolExecutor(1) as threads:
            value = threads.submit(asyncio.run, _await(ex.submit(tasks.add, 20, 22))).result(timeout=30)
    assert value == 42


# -- async def run: in an event loop of the child's own ---------------------------------


def test_an_async_task_runs_in_a_loop_of_its_own_and_returns(start_method, store_path):
    with pool(store_path, start_method) as ex:
        assert [f.result(timeout=30) for f in [ex.submit(tasks.AsyncAdd, i, 1) for i in range(4)]] == [1, 2, 3, 4]
        assert list(ex.map(tasks.AsyncAdd, [1, 2], [10, 20])) == [11, 22]


def test_an_abort_cancels_an_async_task_at_its_next_await(start_method, store_path):
    with pool(store_path, start_method) as ex:
        sleeper, catcher, checker = (ex.submit(task) for task in (tasks.AsyncSleeper, tasks.AsyncCatcher,
                                                                   tasks.AsyncChecker))  # fmt: skip
        wait_for(lambda: started(sleeper) and started(catcher), what="both sleepers")
        sleeper.abort()
        catcher.abort()
        with pytest.raises(TaskAborted, match="cancelled at an await"):
            sleeper.result(timeout=30)  # not an hour
        with pytest.raises(TaskAborted) as info:
            catcher.result(timeout=30)
        assert info.value.partial_result == "partial" and catcher.state == ABORTED
        wait_for(lambda: started(checker), what="the checker")
        checker.abort()
        with pytest.raises(TaskAborted):
            checker.result(timeout=30)
        assert checker.state == ABORTED and checker.progress is not None


def test_a_soft_time_limit_cancels_an_async_task_the_same_way(store_path):
    from localabort import SoftTimeLimitExceeded

    with pool(store_path, "fork") as ex:
        future = ex.apply_async(tasks.AsyncSleeper, soft_time_limit=0.2)
        with pytest.raises(SoftTimeLimitExceeded):
            future.result(timeout=30)
        assert future.state == ABORTED


def test_an_async_task_runs_inline_with_its_aborts():
    from localabort.testing import run_inline

    assert run_inline(tasks.AsyncAdd, 2, 3).result == 5
    assert run_inline(tasks.AsyncChecker, abort_after=3).state == ABORTED  # the watcher's looks are checks too
    outcome = run_inline(tasks.AsyncCatcher, abort_after=1)
    assert outcome.state == ABORTED and outcome.result == "partial"


# -- uvloop, and a loop closed under an await --------------------------------------------


@pytest.mark.leaks_ok("libuv's signal pipe: made once per process, by the first uvloop loop, and kept")
def test_uvloop_awaits_and_aborts_on_both_sides(start_method, store_path):
    uvloop = pytest.importorskip("uvloop")

    async def main(ex):
        assert await ex.submit(tasks.add, 2, 2) == 4
        assert await ex.submit(tasks.AsyncLoopKind) == "Loop"  # uvloop's loop class, in the worker
        # a cancelled await on uvloop aborts; the abort cancels the uvloop-run task
        return await cancel_await_once_started(ex.submit(tasks.AsyncLoopKind, 3600))

    with pool(store_path, start_method, initializer=tasks.install_uvloop) as ex:
        future = uvloop.run(main(ex))
        with pytest.raises(TaskAborted) as info:
            future.result(timeout=30)
        assert info.value.partial_result == "Loop" and future.state == ABORTED


def test_a_loop_closed_while_it_awaits_leaves_the_task_to_finish(store_path, tmp_path):
    gate = tmp_path / "go"
    loop = asyncio.new_event_loop()
    with pool(store_path, "fork") as ex:
        future = ex.submit(tasks.WaitForFile, str(gate))
        waiting = loop.create_task(_await(future))
        loop.run_until_complete(asyncio.sleep(0.05))  # it awaits now
        waiting._log_destroy_pending = False  # closed under it: the loop's "Task was destroyed" is expected here
        loop.close()
        del waiting
        gate.touch()
        assert future.result(timeout=30) == "returned without checking"  # the completion callback raised nothing
        assert ex.store.get(future.id).state == "SUCCESS"
