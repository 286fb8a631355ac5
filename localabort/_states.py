"""Task state names, spelled as in Celery, and the rules between them.

A task moves one way only::

    PENDING --> STARTED --> SUCCESS | FAILURE | ABORTED
       |                                  ^
       +----------------------------------+   (aborted or cancelled before it ran)

A final state is never left again. The abort *request* is not a state: it is
a separate fact (see the store), so no later write of a state can undo it.
"""

from __future__ import annotations

from typing import Optional, Tuple

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
