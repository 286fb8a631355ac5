"""Two commits side by side: trivial ``submit()`` throughput, in runs that alternate, beside ProcessPoolExecutor.

Run with ``python tests/benchmarks/bench_ab.py BASE [--workers 2] [--tasks 20000] [--runs 6] [--sleep S]``: BASE
(a commit, ``HEAD~3`` say) is checked out in a temporary worktree, and each
run is a fresh process (a fresh executor, as a script has): BASE, then the
working tree, then ``ProcessPoolExecutor``, again and again. On a noisy
machine, only runs this close together compare; a ratio divides by PPE's
figure in the same round. Not part of ``nox -s bench``: it needs git.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

_RUN = """
import json, os, sys, tempfile, time
root, tasks, workers, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def identity(x):
    return x
def task(x):
    if seconds:
        time.sleep(seconds)
    return x
if __name__ == "__main__":
    if root == "ppe":
        import concurrent.futures, multiprocessing
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    else:
        sys.path.insert(0, root)
        from localabort import Executor
        pool = Executor(max_workers=workers, store=os.path.join(tempfile.mkdtemp(), "s.sqlite"), mp_context="fork")
    list(pool.map(identity, range(20)))
    cpu, start = time.process_time(), time.perf_counter()
    for future in [pool.submit(task, i) for i in range(tasks)]:
        future.result()
    took = time.perf_counter() - start
    print(json.dumps([tasks / took, (time.process_time() - cpu) / tasks * 1e6]))
    pool.shutdown()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare the working tree with")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS", help="each task sleeps this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "-q", "--detach", base, args.base], check=True)
        try:
            script = os.path.join(tmp, "run.py")  # a file: under ``python -c`` the task would go by value
            with open(script, "w") as f:
                f.write(_RUN)
            figures = {args.base: [], "working tree": [], "ppe": []}
            roots = {args.base: base, "working tree": ROOT, "ppe": "ppe"}
            for _ in range(args.runs):
                for name, root in roots.items():
                    command = [sys.executable, script, root, str(args.tasks), str(args.workers), str(args.sleep)]
                    ran = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp)
                    figures[name].append(json.loads(ran.stdout))
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base], check=False)
    what = f"tasks of {args.sleep * 1e3:g} ms" if args.sleep else "trivial tasks"
    print(f"{args.tasks:,} {what} through submit(), {args.workers} workers, {args.runs} alternating runs")
    print()
    print("| code | tasks/s | ratio to PPE | the parent's CPU, us a task |")
    print("|---|---|---|---|")
    ppe = [rate for rate, _ in figures["ppe"]]
    for name, runs in figures.items():
        rates = [rate for rate, _ in runs]
        ratio = statistics.median(r / p for r, p in zip(rates, ppe))
        print(f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {ratio:.2f} | "
              f"{statistics.median(cpu for _, cpu in runs):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
