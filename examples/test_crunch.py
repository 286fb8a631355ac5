"""How a user tests the abort path of a task: run with ``pytest examples/test_crunch.py``."""

import pytest
from crunch import Crunch

from localabort import TaskAborted
from localabort.testing import assert_aborts_cleanly, assert_checks_every, assert_stops_within, run_inline


def test_squares():
    assert run_inline(Crunch, 4).result == [0, 1, 4, 9]


def test_abort_keeps_the_work_done():
    outcome = run_inline(Crunch, 1000, abort_after=4)
    assert outcome.state == "ABORTED" and outcome.result == [0, 1, 4]


# --8<-- [start:assertions]
def test_checks_often_and_stops_at_once():
    assert_checks_every(1, Crunch, 100)
    assert_stops_within(0, Crunch, 100, abort_after=10)
    assert_aborts_cleanly(Crunch, 50)


# --8<-- [end:assertions]


# --8<-- [start:real]
def test_in_a_real_worker(localabort_executor):
    fut = localabort_executor.submit(Crunch, 10**9)
    fut.abort()
    with pytest.raises(TaskAborted):
        fut.result(timeout=30)


# --8<-- [end:real]
