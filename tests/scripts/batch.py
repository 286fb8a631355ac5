"""A batch script as a user writes one; the fault tests run it in its own process group.

Usage: batch.py STORE START_METHOD TASK [SECONDS [STYLE [WAIT]]]. TASK is a
class of tests.tasks. It prints one JSON line once the first two tasks run
and every task's row is stored (their worker pids and every task id), then
waits for them. STYLE "with"
(the default) runs it in a ``with Executor(...)`` block; "bare" without
one, as people write ``ProcessPoolExecutor`` scripts too. WAIT is how it
waits: "result" (the default), "as_completed", "wait", "map" (the tasks
come from ``map``), or "exit" (it does not: the script ends, and the
interpreter's exit waits).
"""

import concurrent.futures
import faulthandler
import json
import os
import signal
import sys
import time

from localabort import AbortableAsyncResult, Executor
from tests import tasks


def main():
    # A shell starts background jobs with SIGINT ignored; a script at a terminal has Python's handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that finds it hung asks for its stacks
    store, start_method, task_name = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    style = sys.argv[5] if len(sys.argv) > 5 else "with"
    how = sys.argv[6] if len(sys.argv) > 6 else "result"
    task = getattr(tasks, task_name)

    ex = Executor(max_workers=2, store=store, mp_context=start_method)
    if style == "with":
        with ex:
            run(ex, task, seconds, how, store)
    else:
        run(ex, task, seconds, how, store)


def run(ex, task, seconds, how, store):
    if how == "map":
        results = ex.map(task, [seconds] * 6)
        futures = [job.future for job in ex._scheduler.jobs.values()]  # to report their ids
    else:
        futures = [ex.submit(task, seconds) for _ in range(6)]
    while sum(bool(f.progress) for f in futures) < 2:
        time.sleep(0.005)
    # Every id it prints is in the store: an executor writes a queued task's row within milliseconds, and a
    # test that kills it the moment it prints would otherwise ask about an id no process ever stored.
    for f in futures:
        _ = AbortableAsyncResult(f.id, store=store).state  # waits for its row (not an assert: python -O drops it)
    recorder = ex._manager._writer.pid  # None until the writes call for one
    pids = [slot.pid for slot in ex._scheduler.slots] + ([recorder] if recorder else [])
    print(json.dumps({"pid": os.getpid(), "workers": pids, "ids": [f.id for f in futures]}), flush=True)
    if how == "result":
        for f in futures:
            f.result()
    elif how == "as_completed":
        for f in concurrent.futures.as_completed(futures):
            f.result()
    elif how == "wait":
        concurrent.futures.wait(futures)
    elif how == "map":
        list(results)


if __name__ == "__main__":
    main()
