"""The Celery app bench_celery.py runs on a real worker: Celery's own abortable tasks beside localabort's."""

from __future__ import annotations

import os
import time
from pathlib import Path

import kombu.transport.sqlalchemy
from celery import Celery
from celery.contrib.abortable import AbortableTask as CeleryAbortableTask

from localabort.celery import register
from tests.benchmarks.bench_tasks import CheckCost, SeeAbort, Soak
from tests.tasks import Spin

# The sqla transport polls every second by default; its transport options all go to create_engine().
kombu.transport.sqlalchemy.Transport.polling_interval = 0.02

FOLDER = os.environ.get("BENCH_CELERY_DIR", ".")
# bench_celery.py sets both for its Redis and PostgreSQL run; the default is the set-up that needs no server.
BROKER = os.environ.get("BENCH_CELERY_BROKER", f"sqla+sqlite:///{FOLDER}/broker.sqlite")
BACKEND = os.environ.get("BENCH_CELERY_BACKEND", f"db+sqlite:///{FOLDER}/results.sqlite")
app = Celery("bench", broker=BROKER, backend=BACKEND)
app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)


@app.task(bind=True, base=CeleryAbortableTask, name="bench.celery_check_cost")
def celery_check_cost(self, n):
    start = time.perf_counter()
    for _ in range(n):
        self.is_aborted()
    return (time.perf_counter() - start) / n


@app.task(bind=True, base=CeleryAbortableTask, name="bench.celery_see_abort")
def celery_see_abort(self, marker):
    Path(marker).touch()
    while not self.is_aborted():
        pass
    return time.monotonic()


check_cost = register(app, CheckCost)
see_abort = register(app, SeeAbort)
spin = register(app, Spin)
soak = register(app, Soak)
