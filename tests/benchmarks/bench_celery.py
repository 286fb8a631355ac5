"""On a real Celery worker: the abort check and the abort latency of localabort.celery beside celery.contrib.abortable.

Run with ``nox -s bench`` or ``python tests/benchmarks/bench_celery.py [--quick]``.
One ``celery worker --pool=prefork -c 2`` serves both, on the kombu
``sqla+sqlite`` broker and the ``db+sqlite`` backend (the setup of the measured Celery figures).
Latency runs from just before ``abort()`` is called to the moment the task
sees it (``time.monotonic()`` is one clock for every process here).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from tests.benchmarks.common import pct, quick, spread

    short = quick(__doc__, "fewer samples")
    samples, reps = (5, 2) if short else (20, 5)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BENCH_CELERY_DIR"] = tmp
        from localabort import TaskAborted
        from tests.benchmarks import celery_bench_app as bench

        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.benchmarks.celery_bench_app", "worker", "--pool=prefork",
             "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ours_check = [bench.check_cost.delay(200_000).get(timeout=120) * 1e6 for _ in range(reps)]
            theirs_check = [bench.celery_check_cost.delay(2_000).get(timeout=120) * 1e6 for _ in range(reps)]
            ours_lat, theirs_lat = [], []
            for i in range(samples):
                res = bench.see_abort.delay()
                while res.progress is None:
                    time.sleep(0.001)
                t0 = time.monotonic()
                res.abort()
                try:
                    res.get(timeout=60)
                except TaskAborted as exc:
                    ours_lat.append((exc.partial_result - t0) * 1e3)
                marker = Path(tmp) / f"started-{i}"
                celery_res = bench.celery_see_abort.delay(str(marker))
                while not marker.exists():
                    time.sleep(0.001)
                t0 = time.monotonic()
                celery_res.abort()
                theirs_lat.append((celery_res.get(timeout=60) - t0) * 1e3)
                final = celery_res.state
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)

    python = sys.version.split()[0]
    print(f"On a real Celery worker (prefork -c 2, sqla+sqlite broker, db+sqlite backend), Python {python}")
    print()
    print("| figure | celery.contrib.abortable | localabort.celery | target |")
    print("|---|---|---|---|")
    ok = "meets target" if statistics.median(ours_check) <= 5 else "MISSES target"
    print(f"| one is_aborted() in the task, us | {spread(theirs_check)} | {spread(ours_check)} | <= 5 us: {ok} |")
    print(f"| abort() called -> task sees it, p50 / p99 of {samples}, ms | {statistics.median(theirs_lat):.1f} / "
          f"{pct(theirs_lat, 99):.1f} | {statistics.median(ours_lat):.1f} / {pct(ours_lat, 99):.1f} | "
          "tens of ms |")  # fmt: skip
    print(f"| state after the aborted task returned | {final} | ABORTED (never overwritten) | ABORTED |")


if __name__ == "__main__":
    main()
