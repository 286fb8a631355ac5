"""How long ``localabort status`` takes on large stores: ``python tests/benchmarks/bench_status.py``.

Times the real command in a subprocess (interpreter start-up included),
median (min-max) of 5 runs, beside ``python -c pass`` for scale: every
option on a store of 100,000 tasks, then opening a store of 1,000,000 tasks
(what every process pays, dead-executor recovery included) and ``status``
on it. Issue 15's target for both on 1,000,000 tasks: under 0.5 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from localabort._states import STATE_COLUMNS  # noqa: E402
from localabort._store import Store  # noqa: E402
from tests.benchmarks import common  # noqa: E402

TASKS = 100_000
BIG = 1_000_000


def fill(path: str, tasks: int = TASKS) -> None:
    store = Store(path)
    now = time.time()
    states = ["SUCCESS"] * 90 + ["FAILURE"] * 4 + ["ABORTED"] * 4 + ["STARTED", "PENDING"]
    for start in range(0, tasks, 10_000):
        rows = []
        for i in range(start, start + 10_000):
            row = dict.fromkeys(STATE_COLUMNS)
            state = states[i % len(states)]
            row.update(id=str(uuid.uuid4()), executor_id="bench", name=f"jobs.Task{i % 7}", state=state,
                       submitted_at=now - (tasks - i), progress_done=float(i % 100), progress_total=100.0)  # fmt: skip
            if state not in ("STARTED", "PENDING"):
                row["finished_at"] = now - (tasks - i) + 1
            rows.append(row)
        store.write(rows)
    store.dispose()


#: Issue 18's targets, in ms: (what, target).
TARGETS = {"help": ("localabort --help", 100), "json": ("status --json, 100,000 tasks", 500),
           "big": ("status, 1,000,000 tasks, default limit", 500)}  # fmt: skip
MEDIANS = {}


def timed(*args: str, target: str = "") -> str:
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        runs.append((time.perf_counter() - start) * 1e3)
    runs.sort()
    if target:
        MEDIANS[target] = statistics.median(runs)
    return f"{statistics.median(runs):,.0f} ({runs[0]:,.0f}-{runs[-1]:,.0f}) ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.sqlite")
        fill(path)
        cli = [sys.executable, "-m", "localabort"]
        print(f"localabort status on a store of {TASKS:,} tasks, Python {sys.version.split()[0]}")
        print()
        print("| command | time |")
        print("|---|---|")
        print(f"| python -c pass (for scale) | {timed(sys.executable, '-c', 'pass', target='pass')} |")
        floor = timed(sys.executable, "-c", "import sqlalchemy")
        print(f"| python -c 'import sqlalchemy' (which status on an SQLite store no longer imports) | {floor} |")
        print(f"| localabort --help | {timed(*cli, '--help', target='help')} |")
        for options in ([], ["--state", "STARTED"], ["--name", "Task3", "--limit", "10"], ["--json", "--limit", "50"],
                        ["--json"], ["--limit", "0"]):  # fmt: skip
            target = "json" if options == ["--json"] else ""
            took = timed(*cli, "status", path, *options, target=target)
            print(f"| localabort status STORE {' '.join(options)} | {took} |")
        big = os.path.join(tmp, "bigger.sqlite")
        fill(big, BIG)
        opening = f"from localabort._store import Store; Store.open({big!r})"
        print()
        print(f"On a store of {BIG:,} tasks (target: each under 500 ms)")
        print()
        print("| command | time |")
        print("|---|---|")
        print(f"| python -c 'open the store' | {timed(sys.executable, '-c', opening)} |")
        print(f"| localabort status STORE | {timed(*cli, 'status', big, target='big')} |")
        limited = timed(*cli, "status", big, "--limit", "50", "--json")
        print(f"| localabort status STORE --limit 50 --json | {limited} |")
    print()
    print("| target (issues 18 and 33) | measured |  |")
    print("|---|---|---|")
    for key, (what, ms) in TARGETS.items():
        print(f"| {what} <= {ms} ms | {MEDIANS[key]:,.0f} ms | {common.verdict(MEDIANS[key] <= ms)} |")
    times = MEDIANS["big"] / MEDIANS["pass"]
    print(f"| status, 1,000,000 tasks <= 10x python -c pass | {times:.1f}x | {common.verdict(times <= 10)} |")


if __name__ == "__main__":
    main()
