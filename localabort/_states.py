"""Task state names, spelled as in Celery, the rules between them, and the shape of a task's state row and id.

A task moves forward only, but for its retries::

    PENDING --> RECEIVED --> STARTED --> SUCCESS | FAILURE | ABORTED
       |           |            |                ^
       |           |            v                |
       |           |          RETRY -------------+   (aborted while it waits: it never runs again)
       |           |            |  when due: claimed (RECEIVED) again for its next attempt
       +-----------+------------+----------------+   (aborted or cancelled before it ran)

RETRY (Celery's name) is a task waiting for its next attempt after one
that asked to be retried (``self.retry()``, ``autoretry_for``); it holds
no worker. An abort ends it ABORTED at once.

RECEIVED (Celery's name) is a task handed to a worker that is still busy
with the task before it: an abort ends it unrun, unless that worker has
just gone on to it, when it is asked like any running task. A PENDING task
is one no worker holds, so an abort always ends it unrun: the executor
records RECEIVED or STARTED in the store before a worker may start a task
(the *claim*), and checks for aborts in the same transaction. (A task
handed back when its worker dies is PENDING again.)

A final state is never left again. The abort *request* is not a state: it is
a separate fact (see the store), so no later write of a state can undo it.
"""

from __future__ import annotations

import random
import time
from typing import Any, Dict, Optional, Tuple

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
ABORTED = "ABORTED"

#: States a task never leaves once it has reached one.
READY_STATES = frozenset({SUCCESS, FAILURE, ABORTED})
#: States of a task that has not finished.
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
#: States of a task that holds its key (a worker has it, or it waits to retry): one such task per key at a time.
HELD_STATES = frozenset({RECEIVED, STARTED, RETRY})
#: States a task is claimed from, before a worker may start it.
CLAIMABLE_STATES = frozenset({PENDING, RETRY})
ALL_STATES = READY_STATES | UNREADY_STATES

#: A task's progress as it reports it: ``(done, total)``, ``total`` ``None`` when unknown.
Progress = Tuple[float, Optional[float]]

#: What a state write sets in a task's row (the store's ``_schema``); ``abort_requested_at`` is not among them.
STATE_COLUMNS = (
    "executor_id", "name", "key", "state", "submitted_at", "started_at",
    "finished_at", "progress_done", "progress_total", "result", "traceback", "error", "retries", "eta", "args_repr",
    "worker_pid", "cpu_seconds", "peak_rss",
)  # fmt: skip


def task_row(task_id: str, **values: Any) -> Dict[str, Any]:
    """A row for ``Store.write``: ``id`` and every column of ``STATE_COLUMNS``, ``None`` where not given.

    >>> task_row("t1", state=PENDING)["state"]
    'PENDING'
    """
    row: Dict[str, Any] = dict.fromkeys(STATE_COLUMNS)
    row.update(values, id=task_id)
    return row


def new_id() -> str:
    """A task id: a UUID in the version 7 layout (RFC 9562), its first 48 bits the time in ms.

    Ids made one after the other sort together, so the store's id index
    grows at one end: with random (version 4) ids every write touches
    pages all over it, and writes slow down as the store grows.
    ``random`` is reseeded in every forked child, so children never repeat
    their parent's ids.
    """
    ms = time.time_ns() // 1_000_000
    bits = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((bits >> 62) << 64) | (0b10 << 62) | (bits & ((1 << 62) - 1))
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, in a fifth of the time
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def usage(worker_pid: Optional[int], cpu_seconds: Optional[float], peak_rss: Optional[int]) -> Optional[Dict[str, Any]]:
    """What a task used, as ``future.usage`` and ``AbortableAsyncResult.usage`` give it.

    >>> usage(4242, 0.5, 2**20)
    {'worker_pid': 4242, 'cpu_seconds': 0.5, 'peak_rss': 1048576}
    """
    if cpu_seconds is None:  # not ended, or its worker died: only its worker is known
        return None
    return {"worker_pid": worker_pid, "cpu_seconds": cpu_seconds, "peak_rss": peak_rss}
