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
        ["*1 localabort task(s) unfinished when the test ended: * (STARTED); wait for each future (future.result())*"]
    )
