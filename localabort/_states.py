"""Task state names, spelled as in Celery, the rules between them, and the shape of a task's state row.

A task moves one way only::

    PENDING --> STARTED --> SUCCESS | FAILURE | ABORTED
       |                                  ^
       +----------------------------------+   (aborted or cancelled before it ran)

A final state is never left again. The abort *request* is not a state: it is
a separate fact (see the store), so no later write of a state can undo it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

PENDING = "PENDING"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
ABORTED = "ABORTED"

#: States a task never leaves once it has reached one.
READY_STATES = frozenset({SUCCESS, FAILURE, ABORTED})
#: States of a task that has not finished.
UNREADY_STATES = frozenset({PENDING, STARTED})
ALL_STATES = READY_STATES | UNREADY_STATES

#: A task's progress as it reports it: ``(done, total)``, ``total`` ``None`` when unknown.
Progress = Tuple[float, Optional[float]]

#: What a state write sets in a task's row (the store's ``_schema``); ``abort_requested_at`` is not among them.
STATE_COLUMNS = (
    "executor_id", "name", "key", "state", "submitted_at", "started_at",
    "finished_at", "progress_done", "progress_total", "result", "traceback",
)  # fmt: skip


def task_row(task_id: str, **values: Any) -> Dict[str, Any]:
    """A row for ``Store.write``: ``id`` and every column of ``STATE_COLUMNS``, ``None`` where not given.

    >>> task_row("t1", state=PENDING)["state"]
    'PENDING'
    """
    row: Dict[str, Any] = dict.fromkeys(STATE_COLUMNS)
    row.update(values, id=task_id)
    return row
