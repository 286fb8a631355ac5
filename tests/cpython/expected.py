"""The CPython ``test_concurrent_futures`` tests localabort does not pass, each with its reason.

Keys are ``Class.test`` with the start method taken out of the class name
(``ProcessPoolForkExecutorTest`` -> ``ProcessPoolExecutorTest``), or a bare
test name for every class. ``docs/from-concurrent-futures.md`` lists the
same differences for users.
"""

from __future__ import annotations

from typing import Dict

_PROCESSES = "counts or kills worker processes through ProcessPoolExecutor._processes"

#: Tests skipped here: they read CPython's private attributes (no other pool has them), or
#: CPython itself skips them for ProcessPoolExecutor.
SKIP: Dict[str, str] = {
    "test_killed_child": _PROCESSES,
    "test_saturation": _PROCESSES,
    "test_idle_process_reuse_one": _PROCESSES,
    "test_idle_process_reuse_multiple": _PROCESSES,
    "test_max_tasks_per_child": _PROCESSES,
    "test_processes_terminate": _PROCESSES,
    "test_max_tasks_per_child_defaults_to_spawn_context": "reads ProcessPoolExecutor._mp_context",
    "test_shutdown_deadlock_pickle": "joins ProcessPoolExecutor._executor_manager_thread",
    "test_hang_gh83386": "CPython skips it for ProcessPoolExecutor: its script is for ThreadPoolExecutor",
}

_ONE_TASK = (
    "expects BrokenProcessPool; localabort fails only that task (the worker and the pool go on), with the error it met"
)

#: Tests of behaviour where localabort differs by design: marked xfail, and not run (see plugin.py).
DIFFERENT: Dict[str, str] = {
    "test_exit_at_task_unpickle": _ONE_TASK,
    "test_error_at_task_unpickle": _ONE_TASK,
    "test_error_during_result_unpickle_in_result_handler": _ONE_TASK,
    "test_exit_during_result_unpickle_in_result_handler": _ONE_TASK,
    "test_python_finalization_error": (
        "fails the pool's second thread; localabort starts one (its manager: the store's writes are a process's), "
        "and breaks when that one cannot start (tests/test_faults.py)"
    ),
}
