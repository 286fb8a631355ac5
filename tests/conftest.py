"""Fixtures shared by the tests: every executor test runs under each start method."""

from __future__ import annotations

import multiprocessing
import time
from typing import Callable

import pytest

from localabort import Executor

pytest_plugins = ["pytester"]

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store.sqlite")


@pytest.fixture
def executor(start_method, store_path):
    with Executor(max_workers=2, store=store_path, mp_context=start_method) as ex:
        yield ex
        ex.abort_all()  # a failed test may leave a task spinning; teardown must not wait for it


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
