"""Ctrl-C, for real: SIGINT to a batch script's process group (as a terminal sends it) or to it alone."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from localabort import ABORTED, Executor
from localabort._states import READY_STATES
from localabort._store import Store

from . import tasks
from .conftest import ROOT, wait_for

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


FIRST = r"aborting [1-6] tasks?; [2-4] still running; press Ctrl-C again to terminate them"


def assert_interrupted_cleanly(rc, stderr, store, ids, said=(FIRST,), raised="KeyboardInterrupt"):
    """One traceback, the script's own, and one line from localabort per Ctrl-C, matching ``said``."""
    assert rc == -signal.SIGINT, stderr  # died of SIGINT, as an interrupted script does
    lines = [line for line in stderr.splitlines() if line.startswith("localabort: ")]
    assert len(lines) == len(said) and all(re.fullmatch(f"localabort: {w}", x) for x, w in zip(lines, said)), stderr
    rest = "\n".join(line for line in stderr.splitlines() if not line.startswith("localabort: "))
    # One exception printed: its chained context, if any, is part of it (a Ctrl-C can land in CPython's own
    # try/except, as in Python 3.9's threading.Condition(), whose AttributeError it then carries).
    printed = rest.count("Traceback") - rest.count("During handling of the above exception")
    assert printed == 1 and rest.rstrip().endswith(raised), stderr
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
    said = (FIRST, "terminating [2-4] tasks")
    assert_interrupted_cleanly(rc, stderr, store_path, info["ids"], said)
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


# -- SIGTERM and SIGHUP: a service manager's stop, a closed terminal ---------------------------

SIGNALLED = r"{0}: aborting [1-6] tasks?; [2-4] still running; send {0} or press Ctrl-C again to terminate them"


@pytest.mark.parametrize(
    "sig, target",
    [(signal.SIGTERM, "main only"), (signal.SIGHUP, "group")],  # `kill PID`; a terminal that closes
)
def test_sigterm_and_sighup_stop_the_batch_as_ctrl_c_does(start_batch, start_method, store_path, style, sig, target):
    proc, info = start_batch(store_path, start_method, "Ticker", style=style)
    os.killpg(proc.pid, sig) if target == "group" else os.kill(proc.pid, sig)
    rc, stderr = finish(proc)
    said = SIGNALLED.format(sig.name)
    assert_interrupted_cleanly(rc, stderr, store_path, info["ids"], (said,), raised=f"KeyboardInterrupt: {sig.name}")
    records = Store.open(store_path).tasks(info["ids"])
    assert sum(r.progress is not None for r in records) >= 2  # the running ones stopped at a check, with progress
    assert {r.abort_by.split(" (")[0] for r in records} == {sig.name}


def test_a_second_sigterm_terminates_tasks_that_ignore_the_abort(start_batch, store_path, style):
    proc, info = start_batch(store_path, "fork", "Deaf", style=style)
    os.kill(proc.pid, signal.SIGTERM)
    store = Store.open(store_path)
    wait_for(lambda: sum(r.state == ABORTED for r in store.tasks(info["ids"])) == 4, what="pending tasks aborted")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)  # still waiting for tasks that never check (and the first line is out)
    os.kill(proc.pid, signal.SIGTERM)
    rc, stderr = finish(proc)
    said = (SIGNALLED.format("SIGTERM"), "terminating [2-4] tasks")
    assert_interrupted_cleanly(rc, stderr, store_path, info["ids"], said, raised="KeyboardInterrupt: SIGTERM")


IDLE = """
import sys, time
from localabort import Executor
if __name__ == "__main__":
    ex = Executor(max_workers=1, store=sys.argv[1])
    assert ex.submit(abs, -1).result(timeout=60) == 1
    print("idle", flush=True)
    time.sleep(60)
"""


def test_sigterm_with_no_task_unfinished_kills_as_it_would_without_localabort(store_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen([sys.executable, "-c", IDLE, store_path], stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout.readline() == "idle\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["result", "abort"])
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_at_any_moment_of_a_big_batch_exits_with_every_task_recorded(start_method, tmp_path, how, presses):
    """5,000 short tasks; Ctrl-C (once or twice) at a random moment: of submitting, of waiting, of an abort loop.

    The script exits, and every task ``submit()`` returned has a final state in the store.
    """
    script = str(ROOT / "tests" / "scripts" / "flood.py")
    for trial in range(2):
        seed = random.randrange(10**6)
        rnd = random.Random(seed)
        store = str(tmp_path / f"{trial}.sqlite")
        proc = subprocess.Popen(
            [sys.executable, script, store, start_method, "5000", how], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip
        try:
            assert proc.stdout.readline() == "ready\n"
            time.sleep(rnd.uniform(0, 1.5))
            os.killpg(proc.pid, signal.SIGINT)
            if presses == 2:
                time.sleep(rnd.uniform(0, 0.4))
                os.killpg(proc.pid, signal.SIGINT)
            start = time.monotonic()
            rc, stderr = finish(proc)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        why = f"trial {trial}, seed {seed}: {stderr[-2000:]}"
        assert rc == -signal.SIGINT, why
        if presses == 2:
            assert time.monotonic() - start < PROMPT, why
        assert "localabort-worker" not in stderr, why
        ids = Path(store + ".ids").read_text().split()
        records = Store.open(store).tasks(ids)
        assert len(records) == len(ids), why
        unfinished = [r for r in records if r.state not in READY_STATES]
        assert not unfinished, f"{len(unfinished)} of {len(ids)} tasks not finished, e.g. {unfinished[0]}; {why}"


#: What a Ctrl-C, a service manager, a closed terminal and ``signal.alarm`` (pytest-timeout) send the process.
PROCESS_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM}


def test_signals_sent_to_the_process_reach_the_main_thread_not_ours(tmp_path):
    """The kernel gives a process's signal to any thread not blocking it; Python's handler runs in the main one.

    One that lands on the manager's thread does not wake the main thread
    from ``result()``: Ctrl-C would be seen only when the wait ends. So each
    thread an executor starts blocks them, and the main thread does not.
    """
    ex = Executor(max_workers=1, store=tmp_path / "s.sqlite", progress=io.StringIO())
    try:
        called = {}
        future = ex.submit(time.sleep, 0.5)
        future.add_done_callback(lambda f: called.update(
            thread=threading.current_thread(), mask=signal.pthread_sigmask(signal.SIG_BLOCK, [])))  # fmt: skip
        assert future.result(timeout=30) is None
        ours = [ex._manager._thread, ex._progress]
        for thread in ours:
            assert thread.is_alive()
            assert PROCESS_SIGNALS <= tasks.blocked_in(f"/proc/self/task/{thread.native_id}/status"), thread.name
        assert not PROCESS_SIGNALS & tasks.blocked_in(f"/proc/self/task/{threading.get_native_id()}/status")
        # Its done-callbacks run on the manager's thread, with the mask of a user thread: a process they start
        # must still die of SIGTERM.
        wait_for(lambda: called, what="the callback")
        assert called["thread"] is ex._manager._thread and not PROCESS_SIGNALS & called["mask"]
    finally:
        ex.shutdown()


def test_a_worker_the_manager_thread_starts_takes_signals_as_the_first_ones_do(start_method, tmp_path):
    """A replacement worker is started from the manager's thread, which blocks every signal: not the worker.

    It must still die of SIGTERM (how ``terminate_workers`` stops it) and
    set SIGINT and SIGHUP aside as every worker does.
    """
    with Executor(max_workers=1, store=tmp_path / "s.sqlite", mp_context=start_method) as ex:
        first = ex.submit(os.getpid).result(timeout=60)
        assert not PROCESS_SIGNALS & tasks.blocked_in(f"/proc/{first}/status")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: ex._scheduler.slots[0].ready and ex._scheduler.slots[0].pid != first and
                          ex._scheduler.slots[0].pid, what="a new worker")  # fmt: skip
        assert ex.submit(os.getpid).result(timeout=60) == second
        assert not PROCESS_SIGNALS & tasks.blocked_in(f"/proc/{second}/status")
        # Its own thread, which watches for the parent's death, leaves them to the task (a task's signal.alarm).
        task_thread, watch_thread = ex.submit(tasks.blocked_signals).result(timeout=60)
        assert not PROCESS_SIGNALS & task_thread and PROCESS_SIGNALS <= watch_thread


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_deferred_holds_a_signal_back_until_its_block_ends_and_restores_the_handler(sig):
    from localabort._interrupt import _Graceful, deferred

    before = signal.getsignal(sig)
    if sig != signal.SIGINT:  # SIGTERM as Ctrl-C, as ``stop_on_signals`` makes it while an executor is busy
        signal.signal(sig, _Graceful(lambda: True))
    handler = signal.getsignal(sig)
    whole = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred():
                os.kill(os.getpid(), sig)
                for _ in range(1000):  # bytecodes on which Python runs a pending handler
                    time.sleep(0.0001)
                whole.append(True)
        assert whole == [True]  # the block ran to its end, then the Ctrl-C came
        assert signal.getsignal(sig) is handler
    finally:
        signal.signal(sig, before)


@pytest.mark.parametrize("raise_at, body_ran", [(2, False), (3, True)], ids=["entering", "leaving"])
def test_deferred_puts_every_handler_back_when_a_pending_signal_raises_in_a_swap(monkeypatch, raise_at, body_ran):
    """CPython's ``signal()`` runs pending handlers first, and one that raises leaves the swap undone."""
    import localabort._interrupt as interrupt

    real, swaps = interrupt._setsignal, []

    def swap(signum, handler):
        swaps.append(signum)
        if len(swaps) == raise_at:  # 1, 2: SIGINT's and SIGTERM's swap on entering; 3, 4: back, on leaving
            raise KeyboardInterrupt("SIGTERM")
        return real(signum, handler)

    graceful = interrupt._Graceful(lambda: True)
    before = signal.signal(signal.SIGTERM, graceful)
    hup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # not held: an earlier test may have left it graceful
    monkeypatch.setattr(interrupt, "_setsignal", swap)
    ran = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt.deferred():
                ran.append(True)
        assert ran == ([True] if body_ran else [])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is graceful
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGHUP, hup)
