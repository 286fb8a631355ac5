"""The Crunch task on a real Celery worker, aborted from the producer.

Run it: ``python examples/celery_crunch.py [FOLDER]``. It starts a Celery
worker on this module (``celery -A celery_crunch worker``), the way you
would in another terminal, on a kombu ``sqla+sqlite`` broker and a
``db+sqlite`` result backend in FOLDER (a new temporary folder by
default); no server is needed. The localabort store lives in the result
backend's database, so ``localabort status FOLDER/results.sqlite`` shows
the tasks too. Needs ``pip install ".[celery]"`` in the checkout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import kombu.transport.sqlalchemy
from celery import Celery
from crunch import Crunch

from localabort import TaskAborted
from localabort.celery import register

kombu.transport.sqlalchemy.Transport.polling_interval = 0.05  # the sqla broker polls every 1 s by default

# --8<-- [start:app]
FOLDER = os.environ.setdefault("CRUNCH_FOLDER", sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
app = Celery("celery_crunch", broker=f"sqla+sqlite:///{FOLDER}/broker.sqlite",
             backend=f"db+sqlite:///{FOLDER}/results.sqlite")  # fmt: skip
crunch = register(app, Crunch)  # a Celery task named crunch.Crunch that runs Crunch
# --8<-- [end:app]


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_crunch", "worker", "-c", "2", "-l", "warning",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=here, env=dict(os.environ, PYTHONPATH=here),
    )  # fmt: skip
    try:
        # --8<-- [start:produce]
        print("small:", crunch.delay(5).get(timeout=60))  # the first task also waits for the worker to start
        res = crunch.delay(50_000_000)  # long enough to abort
        while res.progress is None:
            time.sleep(0.01)
        print("running:", res.state, res.progress)
        res.abort()  # the task sees it at its next is_aborted(), within ~20 ms
        try:
            res.get(timeout=30)
        except TaskAborted as exc:
            print(f"aborted after {len(exc.partial_result):,} squares; state {res.state}")
        time.sleep(0.5)
        print("still:", res.state)  # never overwritten by the task's return, unlike celery.contrib.abortable
        # --8<-- [end:produce]
    finally:
        worker.send_signal(signal.SIGTERM)  # a warm shutdown, as Ctrl-C in the worker's terminal
        worker.wait(timeout=60)


if __name__ == "__main__":
    main()
