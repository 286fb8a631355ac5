"""The pytest plugin, run on user-style test files in a real pytest subprocess."""

from __future__ import annotations

import pytest

TASKS = """
import pytest
from localabort import AbortableTask, TaskAborted

class Crunch(AbortableTask):
    def run(self, n):
        done = []
        for i in range(n):
            if self.is_aborted():
                return done
            done.append(i * i)
            self.progress(i + 1, n)
        return done
"""


def run(pytester, body, *args):
    pytester.makepyfile(test_user=TASKS + body)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_fixture_runs_real_tasks(pytester, start_method):
    result = run(
        pytester,
        """
def test_abort(localabort_executor):
    fut = localabort_executor.submit(Crunch, 10**9)
    while fut.progress is None:
        pass
    fut.abort()
    with pytest.raises(TaskAborted):
        fut.result(timeout=30)
    assert fut.state == "ABORTED"
    assert localabort_executor._manager.ctx.get_start_method() == "START_METHOD"

def test_delay_goes_to_the_fixture(localabort_executor):
    assert Crunch.delay(3).result(timeout=30) == [0, 1, 4]
""".replace("START_METHOD", start_method),
        f"--localabort-start-method={start_method}",
    )
    result.assert_outcomes(passed=2)


def test_marker_chooses_options(pytester):
    result = run(
        pytester,
        """
@pytest.mark.localabort(start_method="spawn", max_workers=1)
def test_one_spawned_worker(localabort_executor):
    assert len(localabort_executor._scheduler.slots) == 1
    assert localabort_executor._manager.ctx.get_start_method() == "spawn"
    assert localabort_executor.submit(Crunch, 2).result(timeout=30) == [0, 1]
""",
    )
    result.assert_outcomes(passed=1)


def test_unfinished_task_fails_the_test_with_a_clear_message(pytester):
    result = run(
        pytester,
        """
def test_forgets_its_future(localabort_executor):
    fut = localabort_executor.submit(Crunch, 10**9)
    while fut.progress is None:
        pass
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*1 localabort task(s) unfinished when the test ended: * (STARTED); wait for each future (future.result()*"]
    )


ASYNC_TESTS = """
import asyncio

async def test_await_and_cancel(localabort_async_executor):
    ex = localabort_async_executor
    assert await ex.submit(Crunch, 3) == [0, 1, 4]
    fut = ex.submit(Crunch, 10**9)
    waiting = asyncio.ensure_future(_await(fut))
    await asyncio.sleep(0)  # it reaches its await: cancelled before its first step, it would have awaited nothing
    while fut.progress is None:
        await asyncio.sleep(0.005)
    waiting.cancel()  # a cancelled await aborts the task
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(TaskAborted):
        await fut
    assert fut.state == "ABORTED"
    assert ex._manager.ctx.get_start_method() == "spawn"

async def test_forgets_its_future(localabort_async_executor):
    fut = localabort_async_executor.submit(Crunch, 10**9)
    while fut.progress is None:
        await asyncio.sleep(0.005)

async def _await(fut):
    return await fut
"""


@pytest.mark.parametrize("runner", ["pytest-asyncio", "anyio"])
def test_async_fixture_runs_on_the_tests_event_loop(pytester, runner):
    """The async variant under pytest-asyncio (strict mode: the fixture is its own) and under anyio."""
    if runner == "pytest-asyncio":
        pytest.importorskip("pytest_asyncio")
        marks, args = "pytestmark = pytest.mark.asyncio\n", ("-p", "asyncio", "--asyncio-mode=strict")
    else:
        marks, args = "pytestmark = pytest.mark.anyio\n", ("-p", "anyio")
        marks += "@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    result = run(pytester, marks + ASYNC_TESTS, "--localabort-start-method=spawn", *args)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*1 localabort task(s) unfinished when the test ended: * (STARTED); wait for*"])
