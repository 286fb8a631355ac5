"""The task API in this process: helpers outside a task, and the outcome rules via run_inline."""

from __future__ import annotations

import pickle

import pytest

from localabort import ABORTED, FAILURE, SUCCESS, AbortableTask, TaskAborted, checkpoint, current_task, is_aborted
from localabort._task import PROGRESS_INTERVAL
from localabort.testing import run_inline

from . import tasks


def test_helpers_outside_a_task_are_harmless():
    assert current_task() is None and is_aborted() is False
    assert checkpoint() is None


def test_bare_task_instance():
    task = AbortableTask()
    assert task.is_aborted() is False and task.checkpoint() is None
    with pytest.raises(NotImplementedError, match="AbortableTask must implement run"):
        task.run()


def test_outcome_rows_in_process():
    assert run_inline(tasks.Crunch, 3).state == SUCCESS
    failed = run_inline(tasks.Fail, "x")
    assert failed.state == FAILURE and isinstance(failed.exception, ValueError)
    aborted = run_inline(tasks.Crunch, 10, abort_after=3)
    assert aborted.state == ABORTED and aborted.exception.partial_result == [0, 1] == aborted.result
    raised = run_inline(tasks.RaiseAborted)
    assert raised.state == ABORTED and isinstance(raised.exception, TaskAborted)
    deep = run_inline(tasks.DeepCheckpoint, abort_after=5)
    assert deep.state == ABORTED and deep.checks == 5


def test_current_task_is_set_only_while_running():
    outcome = run_inline(tasks.WhoAmI)
    is_self, task_id, request_id, args = outcome.result
    assert is_self and task_id == request_id and args == ()
    assert current_task() is None


def test_progress_is_throttled_but_the_last_value_is_kept():
    reports = []
    task = tasks.Crunch()
    task._bind("t", lambda: False, lambda done, total: reports.append((done, total)))
    assert task.run(1000) == [i * i for i in range(1000)]
    assert reports[0] == (1, 1000) and len(reports) <= 1 + 1 / PROGRESS_INTERVAL
    assert task._last_progress == (1000, 1000)


def test_task_aborted_pickles_with_its_partial_result():
    err = pickle.loads(pickle.dumps(TaskAborted("stop", partial_result=[1], task_id="t")))
    assert (str(err), err.partial_result, err.task_id) == ("stop", [1], "t")


def test_run_inline_rejects_abort_after_zero():
    with pytest.raises(ValueError, match="abort_after counts checks from 1"):
        run_inline(tasks.Crunch, 1, abort_after=0)


def test_chunk_outcomes():
    from localabort._task import execute_chunk

    ok = execute_chunk(tasks.add, [(1, 2), (3, 4)])
    assert (ok.state, ok.result) == (SUCCESS, [3, 7])
    bad = execute_chunk(tasks.Fail(), [("a",), ("b",)])
    assert bad.state == FAILURE and str(bad.exception) == "a"
    checks = iter([False, False, True])
    task = tasks.Crunch()
    task._bind("c", lambda: next(checks, True))
    aborted = execute_chunk(task, [(1,), (1,), (1,)])
    assert aborted.state == ABORTED and aborted.exception.partial_result == [[0], [0]]
