"""Faults injected for real: time limits, a killed executor, contention, bad tasks, huge results, bad stores.

Each test fails if the fault is not handled: a hang fails through the
test timeout. Measured recovery times come from tests/benchmarks/bench_faults.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from localabort import (
    ABORTED,
    FAILURE,
    STARTED,
    SUCCESS,
    AbortableAsyncResult,
    Executor,
    SoftTimeLimitExceeded,
    StoreError,
    TaskAborted,
    TimeLimitExceeded,
    UnknownTask,
    WorkerLost,
    _outcome,
)  # fmt: skip
from localabort._outcome import load_outcome
from localabort._schema import executors
from localabort._states import UNREADY_STATES
from localabort._store import Store

from . import tasks
from .conftest import started, wait_for

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


# -- time limits ----------------------------------------------------------------


def test_soft_time_limit_requests_an_abort_and_says_so(executor):
    fut = executor.submit(tasks.Limited)  # soft_time_limit = 0.3 on the class
    with pytest.raises(SoftTimeLimitExceeded, match=r"^tests.tasks.Limited \[.*\] passed its soft_time_limit of 0.3s"):
        fut.result(timeout=30)
    assert isinstance(fut.exception(), TaskAborted)  # handlers of aborts keep working
    assert fut.exception().partial_result > 0 and fut.state == ABORTED
    record = executor.store.get(fut.id)
    assert record.abort_requested and record.abort_by == "its soft_time_limit of 0.3s"
    assert record.error.startswith("SoftTimeLimitExceeded: tests.tasks.Limited [")  # what status prints
    with pytest.raises(SoftTimeLimitExceeded):  # the store says so too
        AbortableAsyncResult(fut.id, store=executor.store).get(timeout=10)
    override = executor.apply_async(tasks.Spin, soft_time_limit=0.1)
    with pytest.raises(SoftTimeLimitExceeded, match=r"soft_time_limit of 0\.1s"):
        override.result(timeout=30)
    by_a_user = executor.apply_async(tasks.Spin, soft_time_limit=60)
    wait_for(lambda: started(by_a_user))
    by_a_user.abort()
    assert type(by_a_user.exception(timeout=30)) is TaskAborted  # a user's abort is not a time limit


def test_hard_time_limit_kills_the_child_and_the_pool_heals(executor):
    fut = executor.submit(tasks.HardLimited, 30)  # time_limit = 0.5 on the class
    other = executor.submit(tasks.Crunch, 100)
    with pytest.raises(TimeLimitExceeded, match=r"HardLimited \[.*\] ran past its time_limit of 0.5s"):
        fut.result(timeout=30)
    assert fut.state == FAILURE and executor.store.get(fut.id).state == FAILURE
    assert other.result(timeout=30)[-1] == 99 * 99
    assert executor.submit(tasks.add, 2, 3).result(timeout=30) == 5
    override = executor.apply_async(tasks.Deaf, (30,), time_limit=0.2)
    with pytest.raises(TimeLimitExceeded):
        override.result(timeout=30)


# -- tasks that start processes of their own ---------------------------------------

CHILDREN = ["fork", "pool", "subprocess"]


def running(pid):
    """Whether ``pid`` runs (a zombie, exited and not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(path):
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path), what="the task to start its children")
    return [int(pid) for pid in Path(path).read_text().split()]


def gone(pids, what):
    wait_for(lambda: not any(map(running, pids)), timeout=10, what=what)


@pytest.mark.parametrize("how", CHILDREN)
def test_a_hard_time_limit_kills_the_task_and_the_processes_it_started(executor, tmp_path, how):
    path = str(tmp_path / "pids")
    fut = executor.apply_async(tasks.Parent, (path, how), time_limit=1)
    pids = children_of(path)
    with pytest.raises(TimeLimitExceeded):
        fut.result(timeout=10)  # not when the children would have exited (600 s)
    gone(pids, "the task's children to be killed with it")
    assert executor.submit(tasks.add, 2, 3).result(timeout=30) == 5


@pytest.mark.parametrize("how", CHILDREN)
def test_a_worker_killed_while_its_children_live_is_seen_at_once(executor, tmp_path, how):
    path = str(tmp_path / "pids")
    fut = executor.submit(tasks.Parent, path, how)
    pids = children_of(path)
    worker = next(slot.pid for slot in executor._scheduler.slots if slot.job is not None)
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        fut.result(timeout=10)
    gone(pids, "the dead worker's children to be killed")


@pytest.mark.parametrize("how", CHILDREN)
def test_processes_a_task_left_behind_do_not_outlive_the_executor(start_method, store_path, tmp_path, how):
    path = str(tmp_path / "pids")
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as ex:
        assert ex.submit(tasks.Parent, path, how, "return").result(timeout=30)
        pids = children_of(path)
        assert all(map(running, pids))  # a worker's leftovers live as long as it does
    gone(pids, "the leftovers to be killed at shutdown")


# -- an executor killed mid-batch -----------------------------------------------


def test_killed_executor_children_exit_and_its_tasks_are_recovered(start_batch, start_method, store_path):
    proc, info = start_batch(store_path, start_method, "Deaf")
    os.kill(info["pid"], signal.SIGKILL)
    proc.communicate(timeout=30)

    gone(info["workers"], "the dead executor's workers to exit")
    # At once, not after SILENT s: a reader in the dead executor's PID namespace has proof (a new process each,
    # as a user's would be: opening the store recovers it).
    status = subprocess.run([sys.executable, "-m", "localabort", "status", store_path, "--json"],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert {row["state"] for row in json.loads(status.stdout)} == {FAILURE}
    results = [AbortableAsyncResult(task_id, store=store_path) for task_id in info["ids"]]
    assert {r.state for r in results} == {FAILURE}
    with pytest.raises(WorkerLost, match=r"executor .* \(pid \d+ on .*\) died before this task finished"):
        results[0].get(timeout=0)
    with contextlib.closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_an_executor_whose_pid_looks_dead_from_here_but_writes_is_not_recovered(executor):
    """Containers sharing a hostname (and a store) see each other's pids as dead: the heartbeat tells."""
    fut = executor.submit(tasks.Spin)
    wait_for(lambda: getattr(executor.store.get(fut.id), "state", None) == STARTED)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with executor.store._begin() as conn:  # as it would be in another PID namespace: a pid that means nothing here
        conn.execute(executors.update().where(executors.c.id == executor.id)
                     .values(pid=int(gone.stdout), pid_namespace="another-boot/pid:[4026531836]"))  # fmt: skip
    time.sleep(1.0)  # a few heartbeats
    other = Store(executor.store.path)  # another process's view: opening runs recovery
    try:
        assert other.recover_dead_executors() == []
    finally:
        other.dispose()
    fut.abort()
    fut.exception(timeout=30)
    assert executor.store.get(fut.id).state == ABORTED  # its own write landed


def test_live_executor_is_not_recovered(executor):
    fut = executor.submit(tasks.Spin)
    wait_for(lambda: getattr(executor.store.get(fut.id), "state", None) == STARTED)
    other = Store(executor.store.path)  # another process's view: opening runs recovery
    try:
        assert other.recover_dead_executors() == []
    finally:
        other.dispose()
    assert executor.store.get(fut.id).state == STARTED
    fut.abort()
    with pytest.raises(TaskAborted):
        fut.result(timeout=30)


# -- contention -------------------------------------------------------------------

SAME_ID = """
import os, sys
from localabort import Executor
from tests import tasks
if __name__ == "__main__":
    store, folder, me, other = sys.argv[1:5]
    with Executor(max_workers=1, store=store) as ex:
        for r in range(5):
            open(os.path.join(folder, f"ready-{r}-{me}"), "w").close()
            while not os.path.exists(os.path.join(folder, f"ready-{r}-{other}")):
                pass  # spin: the two submits land within microseconds, inside one group commit
            try:
                future = ex.apply_async(tasks.Ledger, (os.path.join(folder, f"ledger-{r}"), me), task_id=f"same-{r}")
                print(r, "ran", future.result(timeout=60), flush=True)
            except ValueError as exc:
                print(r, "refused", exc, flush=True)
"""


def test_one_task_id_submitted_by_two_processes_at_the_same_moment_runs_once(tmp_path):
    """An id is one task in every process: the other producer's submit or future says ValueError, never a run."""
    store = str(tmp_path / "s.sqlite")
    Store(store).dispose()
    run = [sys.executable, "-c", SAME_ID, store, str(tmp_path)]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    procs = [subprocess.Popen([*run, me, other], **pipes) for me, other in (("a", "b"), ("b", "a"))]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    lines = sorted(line.split(" ", 2) for out, _ in outputs for line in out.splitlines())
    reader = Store(store, create=False)
    try:
        for r in range(5):
            said = [(what, rest) for n, what, rest in lines if n == str(r)]
            ran = [rest for what, rest in said if what == "ran"]
            assert len(said) == 2 and len(ran) == 1, said  # one ran; the other was refused
            assert (tmp_path / f"ledger-{r}").read_text().count("\n") == 1  # and it alone ran
            record = reader.get(f"same-{r}")
            assert record.state == SUCCESS and load_outcome(record.state, record.result, None)[0] == ran[0]
    finally:
        reader.dispose()


CONTENDER = """
import sys
from localabort import Executor
from tests import tasks
if __name__ == "__main__":
    with Executor(max_workers=2, store=sys.argv[1]) as ex:
        futures = [ex.submit(tasks.add, i, 1) for i in range(int(sys.argv[2]))]
        assert [f.result(timeout=120) for f in futures] == [i + 1 for i in range(int(sys.argv[2]))]
    print("ok")
"""


def test_two_executors_and_a_poller_share_one_store(tmp_path, store_path):
    script = tmp_path / "contender.py"
    script.write_text(CONTENDER)
    Store(store_path).dispose()  # create it once, so both start on a ready schema
    procs = [
        subprocess.Popen([sys.executable, str(script), store_path, "400"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
        for _ in range(2)
    ]  # fmt: skip
    errors = []
    stop = threading.Event()

    def poll():
        store = Store.open(store_path)
        while not stop.is_set():
            try:
                for record in store.tasks()[:50]:
                    assert AbortableAsyncResult(record.id, store=store).state in {*UNREADY_STATES, SUCCESS}
            except Exception as exc:  # a "database is locked" would land here
                errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        stop.set()
        poller.join()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0 and out.strip() == "ok", err
        assert "locked" not in err
    assert errors == []
    records = Store.open(store_path).tasks()
    assert len(records) == 800 and {r.state for r in records} == {SUCCESS}


# -- tasks a worker cannot load ----------------------------------------------------


def run_script(code, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def test_task_class_in_a_scripts_main_block_under_spawn_fails_that_future_clearly(tmp_path, store_path):
    script = tmp_path / "guarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from localabort import AbortableTask, Executor
            from tests import tasks

            if __name__ == "__main__":
                class InMain(AbortableTask):  # a worker imports this file again, without this block
                    def run(self):
                        return 1

                with Executor(max_workers=1, store=sys.argv[1], mp_context="spawn") as ex:
                    try:
                        ex.submit(InMain).result(timeout=30)
                    except RuntimeError as exc:
                        print(exc)
                    print(ex.submit(tasks.add, 1, 1).result(timeout=30))
            """
        )
    )
    out = subprocess.run([sys.executable, str(script), store_path], capture_output=True, text=True, timeout=60,
                         env=ENV)  # fmt: skip
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("a worker could not load __main__.InMain [")
    assert "define it at module level, before the Executor is made" in first
    assert second == "2"  # the pool goes on


def test_script_without_main_guard_under_spawn_fails_fast(tmp_path, store_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from localabort import Executor
            from tests import tasks
            with Executor(max_workers=2, store=sys.argv[1], mp_context="spawn") as ex:
                futures = [ex.submit(tasks.add, 1, i) for i in range(5)]
                for f in futures:
                    try:
                        f.result(timeout=30)
                    except Exception as exc:
                        print(type(exc).__name__, exc)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script), store_path], capture_output=True, text=True, timeout=60, env=ENV)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all("started an Executor of its own" in line and "`if __name__ == '__main__':`" in line for line in lines)
    assert lines[-1].startswith("BrokenProcessPool the localabort executor stopped: a worker (pid")
    assert out.stderr == ""  # the one line says it all: no worker printed a traceback


def test_a_script_from_stdin_under_spawn_is_told_to_use_a_module(store_path):
    code = f"from localabort import Executor\nExecutor(max_workers=1, store={store_path!r}, mp_context='spawn')\n"
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 1 and "FileNotFoundError" not in out.stderr
    assert out.stderr.splitlines()[-1] == (
        "RuntimeError: workers cannot import __main__ from stdin: under spawn, each worker first runs the main "
        "script's file; put the task in a module and run it as a file, or pass mp_context='fork'"
    )


# -- results -----------------------------------------------------------------------


def test_a_result_of_hundreds_of_megabytes_arrives(start_method, store_path):
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as ex:
        fut = ex.submit(tasks.big_bytes, 300)
        assert len(fut.result(timeout=120)) == 300 * 2**20
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2


def test_a_result_that_exits_when_pickled_fails_its_task_with_that_error_and_the_worker_goes_on(executor):
    """As in ProcessPoolExecutor: the future gets what pickling raised, even SystemExit."""
    fut = executor.submit(tasks.make, "ExitWhenPickled")
    with pytest.raises(SystemExit, match=r"the result of tests\.tasks\.make cannot be pickled"):
        fut.result(timeout=30)
    assert executor.store.get(fut.id).state == FAILURE
    assert executor.submit(tasks.add, 1, 1).result(timeout=30) == 2


@pytest.mark.parametrize(
    "make, raised", [("ExitWhenUnpickled", "SystemExit: 3"), ("CancelWhenUnpickled", "CancelledError: ")]
)
def test_a_result_that_exits_when_unpickled_here_fails_its_task_only(executor, make, raised):
    fut = executor.submit(tasks.make, make)
    with pytest.raises(RuntimeError, match=rf"cannot be unpickled here \({raised}\)"):
        fut.result(timeout=30)
    assert executor.submit(tasks.add, 1, 1).result(timeout=30) == 2  # the executor goes on


def test_a_result_that_raises_keyboard_interrupt_when_unpickled_fails_its_task_only(executor):
    fut = executor.submit(tasks.make, "InterruptWhenUnpickled")
    with pytest.raises(RuntimeError, match=r"cannot be unpickled here \(KeyboardInterrupt\)"):
        fut.result(timeout=30)
    assert executor.submit(tasks.add, 1, 1).result(timeout=30) == 2  # the manager thread lives on


# -- ids and callbacks --------------------------------------------------------------


def test_a_task_id_is_unique_and_a_repeated_one_is_a_clear_error(executor):
    first = executor.apply_async(tasks.Ticker, (30,), task_id="job-1")
    with pytest.raises(ValueError, match="task_id 'job-1' is taken"):
        executor.apply_async(tasks.add, (1, 2), task_id="job-1")  # while the first runs
    first.abort()
    first.exception(timeout=30)
    with pytest.raises(ValueError, match="task_id 'job-1' is taken by a task in the store"):
        executor.apply_async(tasks.add, (1, 2), task_id="job-1")  # finished: its row stays the first's
    assert executor.store.get("job-1").state == ABORTED
    assert executor.apply_async(tasks.add, (1, 2), task_id="job-2").result(timeout=30) == 3  # nothing stalled


KILLED_PRODUCER = """
import os, signal, sys
from localabort import Executor
from tests import tasks
ex = Executor(max_workers=2, store=sys.argv[1])
for i in range(200):
    print(ex.submit(tasks.add, i, 1).id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # before its next group commit, perhaps
"""


def test_ids_a_killed_producer_handed_out_are_never_waited_on_for_ever(store_path):
    """What a SIGKILL leaves is documented: a task with a final state, or an id the store says it never got."""
    out = subprocess.run([sys.executable, "-c", KILLED_PRODUCER, store_path], capture_output=True, text=True,
                         timeout=60, env=ENV)  # fmt: skip
    ids = out.stdout.split()
    assert out.returncode == -signal.SIGKILL and len(ids) == 200
    start = time.monotonic()
    ended = {"final": 0, "unknown": 0}
    for task_id in ids:
        res = AbortableAsyncResult(task_id, store=store_path)
        try:
            res.get(timeout=30)
            ended["final"] += 1
        except UnknownTask:
            ended["unknown"] += 1
        except Exception:  # FAILURE (WorkerLost): the store recovered the dead executor's tasks
            ended["final"] += 1
    assert sum(ended.values()) == 200 and time.monotonic() - start < 30, ended


def test_shutdown_from_a_done_callback_does_not_deadlock(start_method, store_path):
    ex = Executor(max_workers=1, store=store_path, mp_context=start_method)
    called = []
    fut = ex.submit(time.sleep, 0.3)
    fut.add_done_callback(lambda f: called.append(ex.shutdown()))  # runs in the executor's own thread
    assert fut.result(timeout=30) is None
    ex.shutdown()  # returns: the executor stopped
    assert called == [None] and ex._scheduler.stopped.is_set()


def test_a_result_over_the_store_limit_fails_clearly(executor, monkeypatch):
    monkeypatch.setattr(_outcome, "MAX_RESULT_BYTES", 10 * 2**20)
    fut = executor.submit(tasks.big_bytes, 11)
    with pytest.raises(ValueError, match=r"the result of tests.tasks.big_bytes .* over the store's limit"):
        fut.result(timeout=60)
    assert executor.store.get(fut.id).state == FAILURE
    assert len(executor.submit(tasks.big_bytes, 9).result(timeout=60)) == 9 * 2**20


def test_on_a_full_disk_no_future_says_what_the_store_did_not_keep(tmp_path):
    """A 1 MiB tmpfs, mounted in a mount namespace of its own (so no root is needed, only user namespaces)."""
    mount = ["unshare", "--mount", "--map-root-user", "sh", "-c"]
    if subprocess.run([*mount, "mount -t tmpfs tmpfs /mnt"], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    fulldisk = ROOT / "tests" / "scripts" / "fulldisk.py"
    script = f'mount -t tmpfs -o size=1m tmpfs "$0" && exec "{sys.executable}" "{fulldisk}" "$0"'
    done = subprocess.run([*mount, script, str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=100)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    said, stored = report["futures"], report["stored"]
    ok = [task_id for task_id, outcome in said.items() if outcome == "SUCCESS"]
    assert 0 < len(ok) < len(said)  # the disk filled up part way
    assert [stored.get(task_id) for task_id in ok] == [SUCCESS] * len(ok)  # a SUCCESS only once stored
    for outcome in said.values():
        if outcome != "SUCCESS":
            assert outcome.startswith("BrokenProcessPool: ") and "database or disk is full" in outcome, outcome
    # Room again, the broken executor's process alive: it writes what it owed, and closes its row.
    assert not {stored[task_id] for task_id in said} & UNREADY_STATES, stored
    assert report["elsewhere"] == "BrokenProcessPool" and report["closed"] is True


# -- an executor that cannot start ------------------------------------------------

NO_THREAD = """
import sys, threading
from concurrent.futures.process import BrokenProcessPool
start = threading.Thread.start
def refuse(thread):  # as CPython's test_python_finalization_error does to a pool's second thread
    if thread.name == sys.argv[3]:
        raise RuntimeError("can't create new thread at interpreter shutdown")
    start(thread)
threading.Thread.start = refuse
from localabort import Executor
from tests import tasks
if __name__ == "__main__":
    ex = Executor(max_workers=2, store=sys.argv[1], mp_context=sys.argv[2])
    try:
        list(ex.map(tasks.add, [1, 2], [3, 4]))
    except BrokenProcessPool as exc:
        print("broken:", exc)
    ex.shutdown()
    print("exiting")
"""


def test_a_thread_that_cannot_start_breaks_the_executor_and_the_process_still_exits(start_method, store_path):
    """Not a hang at exit: submit() raises BrokenProcessPool naming the cause, and nothing waits for that thread."""
    done = subprocess.run([sys.executable, "-c", NO_THREAD, store_path, start_method, "localabort-manager"],
                          capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "broken: the executor stopped: can't create new thread at interpreter shutdown", "exiting",
    ]  # fmt: skip
    with contextlib.closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("SELECT closed_at IS NOT NULL FROM localabort_executors").fetchall() == [(1,)]


def test_workers_started_before_the_executor_failed_to_start_are_not_left_behind(tmp_path):
    """A dashboard that cannot bind its port fails the constructor: no worker, no open executor row."""
    pytest.importorskip("uvicorn")
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    script = textwrap.dedent("""
        import sys
        import localabort._web as web
        from localabort import Executor

        class Busy(web.Dashboard):
            def __init__(self, store):
                super().__init__(store, port=int(sys.argv[2]))

        web.Dashboard = Busy
        try:
            Executor(max_workers=2, store=sys.argv[1], dashboard=True)
        except OSError as exc:
            print(exc)
    """)
    store_path = str(tmp_path / "s.sqlite")
    try:
        done = subprocess.run([sys.executable, "-c", script, store_path, str(port)], capture_output=True,
                              text=True, env=ENV, timeout=60)  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 0 and "cannot serve the dashboard" in done.stdout, done.stderr
    with contextlib.closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("SELECT closed_at IS NOT NULL FROM localabort_executors").fetchall() == [(1,)]


# -- stores an executor cannot use ----------------------------------------------


def test_executor_on_a_store_it_cannot_write(store_path):
    Store(store_path).dispose()
    url = f"sqlite:///file:{store_path}?mode=ro&uri=true"
    with pytest.raises(
        StoreError, match=r"^sqlite:///file:.*store.sqlite.*: cannot write the store \(attempt to write"
    ):
        Executor(max_workers=1, store=url)


@pytest.mark.parametrize("case", ["missing folder", "not a database"])
def test_executor_on_a_bad_store_raises_one_line(tmp_path, case):
    path = tmp_path / "nope" / "s.sqlite" if case == "missing folder" else tmp_path / "junk.sqlite"
    if case == "not a database":
        path.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError) as info:
        Executor(max_workers=1, store=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
