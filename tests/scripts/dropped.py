"""Executors left without shutdown(), as ProcessPoolExecutor users write them.

Usage: dropped.py STORE START_METHOD HOW. HOW is "del" (the executor is
dropped while its tasks run; the work finishes and the script exits) or
"nowait" (shutdown(wait=False), then the script ends: the exit waits for
the work). Each task touches a file STORE.N, which the test looks for.
"""

import sys

from localabort import Executor
from tests import tasks


def submit_all(store, start_method):
    ex = Executor(max_workers=2, store=store, mp_context=start_method)
    futures = [ex.submit(tasks.Touch, f"{store}.{i}") for i in range(4)]
    return ex, futures


def main():
    store, start_method, how = sys.argv[1:4]
    ex, futures = submit_all(store, start_method)
    if how == "del":
        del ex  # collected here: no exit hook would know of it any more
        print([f.result(timeout=60) == f"{store}.{i}" for i, f in enumerate(futures)], flush=True)
    else:
        ex.shutdown(wait=False)


if __name__ == "__main__":
    main()
