"""A batch whose store's disk fills up: what each future says, and what the store kept.

Usage: fulldisk.py DIR. Runs 200 tasks, each returning 20 kB, on a store
in DIR (a small tmpfs), then prints one JSON object: ``futures`` maps each
task id to "SUCCESS" or the "Type: message" its future raised, and
``stored`` maps each id to the state its row holds.
"""

import json
import operator
import os
import sys

from localabort import Executor
from localabort._store import Store


def main():
    path = os.path.join(sys.argv[1], "full.sqlite")
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
    stored = {record.id: record.state for record in Store.open(path).tasks(outcomes=False)}
    print(json.dumps({"futures": said, "stored": stored}))


if __name__ == "__main__":
    main()
