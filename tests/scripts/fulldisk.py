"""A batch whose store's disk fills up: what each future says, what the store kept, and what it keeps once freed.

Usage: fulldisk.py DIR. Runs 200 tasks, each returning 20 kB, on a store
in DIR (a small tmpfs, part of it taken by a ballast file). Then it frees
the ballast and lives on, as a server would, and prints one JSON object:
``futures`` maps each task id to "SUCCESS" or the "Type: message" its
future raised; ``stored`` maps each id to the state its row held once
the disk had room again (or after 15 s); ``elsewhere`` is what another
process's ``AbortableAsyncResult(id).get(timeout=10)`` said of a task
whose future failed; ``closed`` whether the executor's row was closed.
"""

import json
import operator
import os
import subprocess
import sys
import time

from localabort import Executor
from localabort._schema import executors
from localabort._states import UNREADY_STATES
from localabort._store import Store

ELSEWHERE = """
import sys
from localabort import AbortableAsyncResult
try:
    AbortableAsyncResult(sys.argv[1], store=sys.argv[2]).get(timeout=10)
    print("SUCCESS")
except Exception as exc:
    print(type(exc).__name__)
"""


def main():
    path = os.path.join(sys.argv[1], "full.sqlite")
    ballast = os.path.join(sys.argv[1], "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\0" * 256 * 1024)
    ex = Executor(max_workers=2, store=path)
    futures = [ex.submit(operator.mul, "x", 20_000) for _ in range(200)]
    said = {}
    for future in futures:
        try:
            future.result(timeout=60)
            said[future.id] = "SUCCESS"
        except Exception as exc:
            said[future.id] = f"{type(exc).__name__}: {exc}"
    ex.shutdown()
    os.remove(ballast)  # room again, and this process lives on
    reader = Store(path, create=False)
    deadline = time.monotonic() + 15
    while True:
        stored = {record.id: record.state for record in reader.tasks(outcomes=False)}
        if not UNREADY_STATES & set(stored.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    failed = next((task_id for task_id, outcome in said.items() if outcome != "SUCCESS"), None)
    elsewhere = None
    if failed is not None:
        run = [sys.executable, "-c", ELSEWHERE, failed, path]
        elsewhere = subprocess.run(run, capture_output=True, text=True, timeout=60).stdout.strip()
    with reader.engine.connect() as conn:
        closed = conn.execute(executors.select().where(executors.c.id == ex.id)).first().closed_at is not None
    reader.dispose()
    print(json.dumps({"futures": said, "stored": stored, "elsewhere": elsewhere, "closed": closed}))


if __name__ == "__main__":
    main()
