"""The Celery app the tests' real workers run: broker and backend come from the environment.

``LOCALABORT_CELERY_DIR`` is a folder for the kombu ``sqla+sqlite`` broker
and the ``db+sqlite`` result backend, which also holds the localabort store.
"""

from __future__ import annotations

import os

import kombu.transport.sqlalchemy
from celery import Celery

from localabort.celery import register

from . import tasks

# The sqla transport polls its table every second by default; tests want a task picked up at once.
# (Its broker_transport_options all go to create_engine(), so the class attribute is the way.)
kombu.transport.sqlalchemy.Transport.polling_interval = 0.02

folder = os.environ.get("LOCALABORT_CELERY_DIR", ".")
app = Celery(
    "localabort_tests",
    broker=f"sqla+sqlite:///{folder}/broker.sqlite",
    backend=f"db+sqlite:///{folder}/results.sqlite",
)
app.conf.update(worker_prefetch_multiplier=1, task_acks_late=False, broker_connection_retry_on_startup=True)

crunch = register(app, tasks.Crunch)
spin = register(app, tasks.Spin)
fail = register(app, tasks.Fail)
ticker = register(app, tasks.Ticker)
deaf = register(app, tasks.Deaf)
limited = register(app, tasks.Limited)
touch = register(app, tasks.Touch)
deep = register(app, tasks.DeepCheckpoint)
unpicklable = register(app, tasks.Unpicklable)
async_sleeper = register(app, tasks.AsyncSleeper)
soft_memory = register(app, tasks.CelerySoftMemory)
hard_memory = register(app, tasks.CeleryHardMemory)
async_catcher = register(app, tasks.AsyncCatcher)
# The same tasks with their states on a PostgreSQL server (when the tests have one), not in the backend's database.
POSTGRES = os.environ.get("LOCALABORT_TEST_POSTGRES_URL")
crunch_pg = register(app, tasks.Crunch, store=POSTGRES, name="tests.crunch_on_postgresql")
spin_pg = register(app, tasks.Spin, store=POSTGRES, name="tests.spin_on_postgresql")
flaky = register(app, tasks.Flaky)
chatty = register(app, tasks.Chatty)

# Scale-out: a Redis broker and a PostgreSQL store, for several workers (tests/test_celery.py starts them with
# LOCALABORT_TEST_REDIS_URL and LOCALABORT_SCALE_STORE set; elsewhere these tasks are never sent).
REDIS = os.environ.get("LOCALABORT_TEST_REDIS_URL", "memory://")
SCALE_STORE = os.environ.get("LOCALABORT_SCALE_STORE", f"sqlite:///{folder}/scale.sqlite")
scale_app = Celery("localabort_scale", broker=REDIS, backend=f"db+{SCALE_STORE}")
scale_app.conf.update(worker_prefetch_multiplier=1, task_acks_late=False, broker_connection_retry_on_startup=True)
s_spin = register(scale_app, tasks.Spin)
s_deaf = register(scale_app, tasks.Deaf)
s_crunch = register(scale_app, tasks.Crunch)
s_fail = register(scale_app, tasks.Fail)
s_hard_limit = register(scale_app, tasks.Deaf, time_limit=1, name="tests.deaf_with_a_time_limit")
s_redelivered = register(scale_app, tasks.Spin, acks_late=True, reject_on_worker_lost=True, name="tests.spin_acks_late")
s_graceful = register(scale_app, tasks.Spin, abort_on_warm_shutdown=True, name="tests.spin_aborted_on_shutdown")
