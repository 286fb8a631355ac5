"""Time from each fault to a clean exit or recovery: ``python tests/benchmarks/bench_faults.py``.

Every figure is the median (min-max) over repetitions, in milliseconds,
with real signals sent to real process groups.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from localabort import Executor, TimeLimitExceeded, WorkerLost  # noqa: E402
from localabort._store import Store  # noqa: E402
from tests import tasks  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=ROOT)


def spread(values):
    values = sorted(values)
    return f"{statistics.median(values):,.0f} ({values[0]:,.0f}-{values[-1]:,.0f})"


def batch(store, start_method, task):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "scripts", "batch.py"), store, start_method, task],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True,
    )  # fmt: skip
    return proc, json.loads(proc.stdout.readline())


def gone(pids):
    for pid in pids:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except (ProcessLookupError, FileNotFoundError):
            pass
    return True


def ctrl_c(tmp, start_method, rep, to_group, twice):
    store = os.path.join(tmp, f"int-{start_method}-{rep}-{to_group}-{twice}.sqlite")
    proc, _ = batch(store, start_method, "Deaf" if twice else "Ticker")
    kill = (lambda: os.killpg(proc.pid, signal.SIGINT)) if to_group else (lambda: os.kill(proc.pid, signal.SIGINT))
    kill()
    if twice:
        deadline = time.monotonic() + 10
        while sum(r.state == "ABORTED" for r in Store.open(store).tasks()) < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)
        kill()
    start = time.monotonic()
    proc.communicate(timeout=60)
    return (time.monotonic() - start) * 1e3


def killed_executor(tmp, start_method, rep):
    store = os.path.join(tmp, f"kill-{start_method}-{rep}.sqlite")
    proc, info = batch(store, start_method, "Deaf")
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    while not gone(info["workers"]):
        time.sleep(0.002)
    children = (time.monotonic() - start) * 1e3
    # Dead is a pid gone *and* silent for SILENT s (a live executor renews its heartbeat every 0.5 s):
    # what a process that opens the store (a watcher polls every second) waits for.
    while {r.state for r in Store.open(store).tasks()} != {"FAILURE"}:
        time.sleep(0.05)
        Store.open(store).recover_dead_executors()
    recover = (time.monotonic() - start) * 1e3
    return children, recover


def dead_child(tmp, start_method, rep):
    with Executor(max_workers=2, store=os.path.join(tmp, f"die-{start_method}-{rep}.sqlite"),
                  mp_context=start_method) as ex:  # fmt: skip
        ex.submit(tasks.add, 1, 1).result()
        start = time.monotonic()
        fut = ex.submit(tasks.Die, "kill")
        try:
            fut.result()
        except WorkerLost:
            pass
        lost = (time.monotonic() - start) * 1e3
        while not all(slot.ready for slot in ex._scheduler.slots):
            time.sleep(0.001)
        healed = (time.monotonic() - start) * 1e3
        return lost, healed


def hard_limit(tmp, start_method, rep):
    with Executor(max_workers=1, store=os.path.join(tmp, f"hard-{start_method}-{rep}.sqlite"),
                  mp_context=start_method) as ex:  # fmt: skip
        ex.submit(tasks.add, 1, 1).result()
        fut = ex.apply_async(tasks.Deaf, (30,), time_limit=0.5)
        start = time.monotonic()
        try:
            fut.result()
        except TimeLimitExceeded:
            pass
        return (time.monotonic() - start) * 1e3 - 500


def main() -> None:
    reps = 3
    methods = ["fork", "spawn", "forkserver"]
    print(f"localabort fault recovery, ms, median (min-max) of {reps}; Python {sys.version.split()[0]}")
    print()
    print("| fault | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            "Ctrl-C to the process group -> script exit (tasks check every 10 ms)":
                lambda m, r: ctrl_c(tmp, m, r, True, False),
            "Ctrl-C to the main process only -> script exit": lambda m, r: ctrl_c(tmp, m, r, False, False),
            "second Ctrl-C (tasks never check) -> script exit": lambda m, r: ctrl_c(tmp, m, r, True, True),
            "hard time_limit passed -> future done (beyond the limit)": lambda m, r: hard_limit(tmp, m, r),
        }  # fmt: skip
        for label, measure in rows.items():
            print(f"| {label} | " + " | ".join(spread([measure(m, r) for r in range(reps)]) for m in methods) + " |")
        lost = {m: [dead_child(tmp, m, r) for r in range(reps)] for m in methods}
        print("| child SIGKILLed -> its future raises WorkerLost | "
              + " | ".join(spread([x[0] for x in lost[m]]) for m in methods) + " |")  # fmt: skip
        print("| child SIGKILLed -> replacement worker ready | "
              + " | ".join(spread([x[1] for x in lost[m]]) for m in methods) + " |")  # fmt: skip
        killed = {m: [killed_executor(tmp, m, r) for r in range(reps)] for m in methods}
        print("| executor SIGKILLed -> all its workers gone | "
              + " | ".join(spread([x[0] for x in killed[m]]) for m in methods) + " |")  # fmt: skip
        print("| executor SIGKILLed -> its tasks FAILURE (WorkerLost) at the next look (SILENT = 5 s) | "
              + " | ".join(spread([x[1] for x in killed[m]]) for m in methods) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
