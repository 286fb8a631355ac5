"""localabort.testing: run_inline and the assertion helpers, in this process."""

from __future__ import annotations

import time

import pytest

from localabort import ABORTED, FAILURE, SUCCESS, AbortableTask
from localabort.testing import (
    assert_aborts_cleanly,
    assert_checks_every,
    assert_stops_retrying_once_aborted,
    assert_stops_within,
    run_inline,
)

from . import tasks


class CheckEveryOther(AbortableTask):
    def run(self, n):
        for i in range(n):
            if i % 2 == 0 and self.is_aborted():
                return i
            self.progress(i + 1)
        return n


class CrashWhenAborted(AbortableTask):
    def run(self, n):
        for i in range(n):
            if self.is_aborted() and i > 5:
                raise RuntimeError("cleanup failed")
            if self.is_aborted():
                return i
        return n


def test_run_inline_counts_checks_and_keeps_progress():
    outcome = run_inline(tasks.Crunch, 10)
    assert (outcome.state, outcome.checks, outcome.progress) == (SUCCESS, 10, (10, 10))
    assert run_inline(tasks.Crunch, 10, abort_after=1).result == []


def test_run_inline_plain_callable():
    outcome = run_inline(tasks.add, 1, 2)
    assert (outcome.state, outcome.result, outcome.checks, outcome.progress) == (SUCCESS, 3, 0, None)


def test_assert_checks_every():
    assert_checks_every(1, tasks.Crunch, 50)
    assert_checks_every(2, CheckEveryOther, 50)
    with pytest.raises(AssertionError, match="CheckEveryOther ran from progress 0 to 2 without checking"):
        assert_checks_every(1, CheckEveryOther, 50)
    with pytest.raises(AssertionError, match=r"ended FAILURE \(ValueError: x\) when run without an abort"):
        assert_checks_every(1, tasks.Fail, "x")
    with pytest.raises(AssertionError, match="reported no progress"):
        assert_checks_every(1, tasks.OtherAborted, "t")


def test_assert_stops_within():
    outcome = assert_stops_within(0, tasks.Crunch, 100, abort_after=7)
    assert outcome.state == ABORTED and outcome.result == [i * i for i in range(6)]
    with pytest.raises(AssertionError, match="before the abort at check 50; pass a smaller abort_after"):
        assert_stops_within(0, tasks.Crunch, 10, abort_after=50)
    with pytest.raises(AssertionError, match="WaitForFile ended after 0 checks, before the abort at check 1"):
        assert_stops_within(0, tasks.WaitForFile, __file__)
    with pytest.raises(AssertionError, match=r"ended FAILURE \(RuntimeError: cleanup failed\), not ABORTED"):
        assert_stops_within(5, CrashWhenAborted, 10, abort_after=13)


def test_assert_aborts_cleanly():
    assert_aborts_cleanly(tasks.Crunch, 30)
    # Two checks a round; the first abort seen in round 6 (check 13) takes the crashing branch.
    with pytest.raises(AssertionError, match=r"abort at check 13 of 20, CrashWhenAborted ended FAILURE \(Runt"):
        assert_aborts_cleanly(CrashWhenAborted, 10)
    with pytest.raises(AssertionError, match="never checked is_aborted"):
        assert_aborts_cleanly(tasks.add, 1, 2)
    with pytest.raises(AssertionError, match="ended FAILURE"):
        assert_aborts_cleanly(tasks.Fail, "x")


def test_assert_aborts_cleanly_samples_long_tasks():
    calls = []

    class Counted(AbortableTask):
        def run(self, n):
            calls.append(1)
            for _ in range(n):
                if self.is_aborted():
                    return None
            return n

    assert_aborts_cleanly(Counted, 10_000, max_points=20)
    assert len(calls) == 1 + 20


def test_failing_helper_points_at_the_users_line(pytester):
    pytester.makepyfile(
        test_user="""
        from localabort import AbortableTask
        from localabort.testing import assert_checks_every

        class Lazy(AbortableTask):
            def run(self, n):
                for i in range(n):
                    self.progress(i + 1, n)

        def test_lazy():
            assert_checks_every(10, Lazy, 50)   # the user's line
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*assert_checks_every(10, Lazy, 50)   # the user's line*", "E*AssertionError: Lazy ran*"]
    )
    assert "raise AssertionError(" not in result.stdout.str()


class Fetch(AbortableTask):
    """Fails twice on ConnectionError, then succeeds: the unit test a user writes for retries."""

    autoretry_for = (ConnectionError,)
    retry_backoff = True
    retry_jitter = False

    def run(self):
        if self.request.retries < 2:
            raise ConnectionError("reset")
        return "page"


class GivesUp(AbortableTask):
    max_retries = 1
    default_retry_delay = 7

    def run(self):
        raise self.retry(exc=TimeoutError("slow"))


def test_run_inline_runs_the_attempts_without_waiting():
    start = time.monotonic()
    outcome = run_inline(Fetch)
    assert (outcome.state, outcome.result, outcome.retries, outcome.delays) == (SUCCESS, "page", 2, (1.0, 2.0))
    assert time.monotonic() - start < 1  # the 3 s of backoff are reported, not slept
    gave_up = run_inline(GivesUp)
    assert (gave_up.state, gave_up.retries, gave_up.delays) == (FAILURE, 1, (7,))
    assert isinstance(gave_up.exception, TimeoutError)


def test_assert_stops_retrying_once_aborted():
    assert assert_stops_retrying_once_aborted(Fetch).retries == 0  # aborted as its first attempt ends
    assert assert_stops_retrying_once_aborted(Fetch, abort_after=2).retries == 1

    class Swallows(AbortableTask):
        autoretry_for = (ConnectionError,)

        def run(self):
            if self.is_aborted():
                return "done anyway"  # an honoured abort: fine
            raise ConnectionError("reset")

    assert assert_stops_retrying_once_aborted(Swallows, abort_after=3).state == ABORTED

    class Sloppy(AbortableTask):
        autoretry_for = (ConnectionError,)

        def run(self):
            if self.is_aborted():
                raise RuntimeError("stopped")  # an abort turned into an error: not ABORTED
            raise ConnectionError("reset")

    with pytest.raises(AssertionError, match=r"Sloppy, aborted at check 3, ended FAILURE \(RuntimeError: stopped\)"):
        assert_stops_retrying_once_aborted(Sloppy, abort_after=3)
