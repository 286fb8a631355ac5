"""A big batch of short tasks, for Ctrl-C at random moments; the fault tests run it in its own process group.

Usage: flood.py STORE START_METHOD N HOW. It prints ``ready`` once its
executor exists, then submits N tasks of ``tests.tasks.Sleepy`` (1 ms
each), writing each id the moment ``submit()`` returns it to the file
STORE + ".ids". HOW is what it does next: "result" waits for every
result; "abort" aborts every task in a loop, then waits. Then it waits
for the Ctrl-C, so one always finds the script at work, never on its way
out (where Python drops a KeyboardInterrupt).
"""

import faulthandler
import signal
import sys
import time

from localabort import Executor
from tests import tasks


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    store, start_method, n, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(store + ".ids", "w", buffering=1) as ids:
        ex = Executor(max_workers=2, store=store, mp_context=start_method)
        print("ready", flush=True)
        with ex:
            futures = []
            for _ in range(n):
                futures.append(ex.submit(tasks.Sleepy, 0.001))
                ids.write(futures[-1].id + "\n")
            if how == "abort":
                for future in futures:
                    future.abort()
            for future in futures:
                try:
                    future.result()
                except Exception:
                    pass
            while True:  # for the Ctrl-C
                time.sleep(0.05)


if __name__ == "__main__":
    main()
