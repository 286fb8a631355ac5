"""Ctrl-C, for real: SIGINT to a batch script's process group (as a terminal sends it) or to it alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from localabort import ABORTED
from localabort._store import Store

from .conftest import wait_for

#: A generous bound that tells "stopped promptly" from "waited for 30-second tasks"; the measured
#: figures are printed by tests/benchmarks/bench_faults.py, not asserted here.
PROMPT = 5.0


def finish(proc, timeout=30):
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)  # the script dumps every thread's stack (faulthandler)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the batch script did not exit after Ctrl-C; its threads:\n{stderr}")
    return proc.returncode, stderr


def assert_interrupted_cleanly(rc, stderr, store, ids):
    assert rc == -signal.SIGINT, stderr  # died of SIGINT, as an interrupted script does
    assert stderr.count("Traceback") == 1 and stderr.rstrip().endswith("KeyboardInterrupt"), stderr
    assert "localabort-worker" not in stderr  # no child printed anything
    assert {r.state for r in Store.open(store).tasks(ids)} == {ABORTED}


@pytest.fixture(params=["with", "bare"])
def style(request):
    """A script with a ``with Executor(...)`` block, or without one (the exit hook then decides)."""
    return request.param


@pytest.mark.parametrize("target", ["group", "main only"])
def test_ctrl_c_aborts_gracefully(start_batch, start_method, store_path, target, style):
    proc, info = start_batch(store_path, start_method, "Ticker", style=style)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT) if target == "group" else os.kill(proc.pid, signal.SIGINT)
    rc, stderr = finish(proc)
    assert time.monotonic() - start < PROMPT
    assert_interrupted_cleanly(rc, stderr, store_path, info["ids"])
    records = Store.open(store_path).tasks(info["ids"])
    assert sum(r.started_at is None for r in records) == 4  # the pending ones never started


def test_second_ctrl_c_terminates_tasks_that_ignore_the_abort(start_batch, start_method, store_path, style):
    proc, info = start_batch(store_path, start_method, "Deaf", style=style)
    os.killpg(proc.pid, signal.SIGINT)
    store = Store.open(store_path)
    # The first Ctrl-C ended the four pending tasks; the two running ones ignore the abort.
    wait_for(lambda: sum(r.state == ABORTED for r in store.tasks(info["ids"])) == 4, what="pending tasks aborted")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)  # still waiting for tasks that never check
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    rc, stderr = finish(proc)
    assert time.monotonic() - start < PROMPT
    assert_interrupted_cleanly(rc, stderr, store_path, info["ids"])
    for pid in info["workers"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("how", ["as_completed", "wait", "map"])
def test_ctrl_c_in_any_wait_takes_the_same_path(start_batch, store_path, style, how):
    proc, info = start_batch(store_path, "fork", "Ticker", style=style, how=how)
    os.killpg(proc.pid, signal.SIGINT)
    rc, stderr = finish(proc)
    assert_interrupted_cleanly(rc, stderr, store_path, info["ids"])


def test_ctrl_c_while_the_interpreter_exit_waits_aborts_the_tasks(start_batch, store_path):
    """A script that ended without waiting (no with, no shutdown): its exit waits, as ProcessPoolExecutor's does."""
    proc, info = start_batch(store_path, "fork", "Ticker", style="bare", how="exit")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)  # the exit waits for the tasks
    os.killpg(proc.pid, signal.SIGINT)
    rc, stderr = finish(proc)
    assert rc == 0, stderr  # the script itself had finished
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert {r.state for r in Store.open(store_path).tasks(info["ids"])} == {ABORTED}
