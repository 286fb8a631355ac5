"""Lambdas, closures, local classes and an interactive ``__main__``'s tasks, sent by value under each start method."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from localabort import ABORTED, SUCCESS, AbortableTask, Executor, SoftTimeLimitExceeded, TaskAborted
from localabort._byvalue import BY_VALUE_WARN, dumps
from localabort._store import Store

from .conftest import pool, started, wait_for

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def test_an_importable_task_goes_by_reference_and_a_lambda_by_value():
    from . import tasks

    assert len(dumps((tasks.add, (1, 2), {}))) < 100  # a module and a name
    assert b"co_code" not in dumps((tasks.add, (), {}))
    blob = dumps((lambda x: x + 1, (), {}))
    assert b"cloudpickle" in blob  # its code travels, rebuilt by cloudpickle's functions


def test_lambdas_closures_and_local_classes_run_with_abort_progress_retries_and_limits(start_method, store_path):
    offset = 40

    class Local(AbortableTask):  # defined in a function: no worker could import it by name
        def run(self, n):
            i = 0
            while not self.is_aborted():
                i += 1
                self.progress(i, n)
                time.sleep(0.001)
            return i + offset  # the closure's value, as it was at the submit

    class LocalFlaky(AbortableTask):
        autoretry_for = (ConnectionError,)
        default_retry_delay = 0.01

        def run(self):
            if self.request.retries < 2:
                raise ConnectionError("not yet")
            return self.request.retries

    class LocalSlow(AbortableTask):
        soft_time_limit = 0.2

        def run(self):
            while not self.is_aborted():
                time.sleep(0.001)
            return "stopped"

    with pool(store_path, start_method) as ex:
        assert ex.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        assert ex.submit(lambda: offset + 2).result(timeout=30) == 42
        assert list(ex.map(lambda a, b: a * b, [1, 2, 3], [4, 5, 6], chunksize=2)) == [4, 10, 18]
        local = ex.submit(Local, 10)
        wait_for(lambda: started(local) and local.progress is not None, what="the local task's progress")
        local.abort()
        with pytest.raises(TaskAborted) as info:
            local.result(timeout=30)
        assert info.value.partial_result > offset and local.state == ABORTED
        assert ex.submit(LocalFlaky).result(timeout=30) == 2
        with pytest.raises(SoftTimeLimitExceeded):
            ex.submit(LocalSlow).result(timeout=30)
        names = {r.name for r in ex.store.tasks()}
    assert any(".<locals>.<lambda> (test_byvalue.py:" in name for name in names), names  # where: says which one


def test_a_lambda_initializer_reaches_every_worker(start_method, store_path):
    from . import tasks

    with pool(store_path, start_method, initializer=lambda v: tasks.remember(v), initargs=("set",)) as ex:
        assert ex.submit(tasks.remembered).result(timeout=30)[0] == "set"


def _script(code, store, start_method):
    """Run ``code`` as ``python -c`` does: an interactive ``__main__``, with no file a worker could import."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), store, start_method], capture_output=True,
                          text=True, timeout=90, env=ENV)  # fmt: skip


def test_an_interactive_mains_class_and_function_run_under_each_start_method(start_method, store_path):
    out = _script(
        """
        import sys, time
        from localabort import AbortableTask, Executor, TaskAborted

        class Count(AbortableTask):
            def run(self, n):
                for i in range(n):
                    if self.is_aborted():
                        return i
                    self.progress(i + 1, n)
                    time.sleep(0.001)
                return n

        def double(x):
            return 2 * x

        if __name__ == "__main__":
            with Executor(max_workers=2, store=sys.argv[1], mp_context=sys.argv[2]) as ex:
                print(ex.submit(double, 21).result(timeout=30), ex.submit(Count, 3).result(timeout=30))
                long = ex.submit(Count, 10**6)
                while long.progress is None:
                    time.sleep(0.01)
                long.abort()
                try:
                    long.result(timeout=30)
                except TaskAborted as exc:
                    print("aborted", exc.partial_result > 0)
        """,
        store_path,
        start_method,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "3", "aborted", "True"]
    states = {(r.name, r.state) for r in Store.open(store_path).tasks()}
    assert states == {("__main__.double", SUCCESS), ("__main__.Count", SUCCESS), ("__main__.Count", ABORTED)}


def test_a_class_redefined_after_the_executor_started_runs_as_it_is_now(store_path):
    out = _script(
        """
        import sys
        from localabort import AbortableTask, Executor

        with Executor(max_workers=1, store=sys.argv[1], mp_context=sys.argv[2]) as ex:
            class Version(AbortableTask):
                def run(self):
                    return 1
            first = ex.submit(Version).result(timeout=30)

            class Version(AbortableTask):  # a notebook cell run again, changed
                def run(self):
                    return 2
            print(first, ex.submit(Version).result(timeout=30))
        """,
        store_path,
        "fork",  # the worker was forked before either class existed
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2"]


def test_a_closure_over_a_lock_fails_at_submit_in_one_line_naming_it(executor):
    lock = threading.Lock()
    said = r"^cannot send tests\.test_byvalue\..*<locals>\.<lambda> \(test_byvalue\.py:\d+\) to a worker: "
    with pytest.raises(TypeError, match=said + r"cannot pickle '_thread\.lock' object; its arguments"):
        executor.submit(lambda: lock.locked()).result(timeout=30)
    connection = sqlite3.connect(":memory:")
    with pytest.raises(TypeError, match=r"cannot pickle 'sqlite3\.Connection' object"):
        executor.submit(lambda: connection.execute("select 1")).result(timeout=30)
    connection.close()
    assert executor.submit(lambda: 7).result(timeout=30) == 7  # the executor goes on


def test_a_huge_lambda_says_how_big_it_went(executor, monkeypatch):
    from localabort import _byvalue

    monkeypatch.setattr(_byvalue, "_warned", set())  # once per name and process: this test runs under each method
    big = b"x" * (BY_VALUE_WARN + 1000)
    with pytest.warns(UserWarning, match=r"goes to its worker by value, 1\.0 MiB pickled at each submit"):
        future = executor.submit(lambda: len(big))
    assert future.result(timeout=30) == len(big)


def test_an_unloadable_initializer_fails_the_constructor_in_one_line(store_path):
    lock = threading.Lock()
    said = r"cannot send the initializer .* to the workers: cannot pickle '_thread\.lock'"
    with pytest.raises(TypeError, match=said):
        Executor(max_workers=1, store=store_path, mp_context="spawn", initializer=lambda: lock.locked())
