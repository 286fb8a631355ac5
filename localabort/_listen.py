"""Word of new abort requests from the database itself: PostgreSQL's ``LISTEN``/``NOTIFY``.

Every abort request on a PostgreSQL store also sends a notification on the
channel ``CHANNEL``, in the transaction that records it, so it is
delivered when (and only if) the request is committed. A process that
watches tasks (``_watch``) holds one listening connection, asks it
whether a notification came (a ``select``, no query), and reads the store
only then, instead of every few milliseconds: an abort arrives in about a
millisecond, at no cost while none is asked.

A notification says which task (its id, and the ``terminate_at`` its
request asked), so a watcher sets the task's flag without a query. It is
never the only way: the watcher also reads the rows now and then, so a
notification lost with a dropped connection costs latency, not the abort.

SQLite has no such thing; there ``listener`` returns ``None`` and the
watcher polls.
"""

from __future__ import annotations

import select
from typing import Any, List, Optional, Tuple

__all__ = ["ANY", "CHANNEL", "Listener", "listener", "parse", "payload"]

#: The channel of abort notifications; the payload is ``payload(task_id, terminate_at)``.
CHANNEL = "localabort_abort"
#: The task id of a notification about any number of tasks (``request_abort_all``): read the store.
ANY = "*"


def payload(task_id: str, terminate_at: Optional[float]) -> str:
    """A notification's text: the task's id, then the ``terminate_at`` its request asked (empty if none)."""
    return f"{task_id} {'' if terminate_at is None else repr(terminate_at)}"


def parse(text: str) -> Tuple[str, Optional[float]]:
    """The task id and ``terminate_at`` of a notification's ``payload`` (an id may hold spaces; a time cannot)."""
    task_id, _, at = text.rpartition(" ")
    try:
        return task_id, float(at) if at else None
    except ValueError:  # not ours to read: it still says an abort came
        return ANY, None


class Listener:
    """One connection that listens on ``CHANNEL`` (psycopg 3's own, outside SQLAlchemy's pool)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._poll = select.poll()  # not select(): it takes any descriptor, however many files are open
        self._poll.register(conn.fileno(), select.POLLIN)

    def pending(self) -> List[Tuple[str, Optional[float]]]:
        """The notifications that came since the last call, parsed (``parse``); reads them all, never waits.

        A ``poll`` of the socket first: nothing else reads this
        connection, so a socket with nothing to read holds no notification.
        """
        if not self._poll.poll(0):
            return []
        return [parse(notify.payload) for notify in self._conn.notifies(timeout=0.0)]

    def close(self) -> None:
        self._conn.close()


def listener(url: Any) -> Optional[Listener]:
    """A ``Listener`` on the PostgreSQL database of ``url`` (a SQLAlchemy URL), or ``None`` if it cannot listen.

    Only psycopg 3 (``postgresql+psycopg://``, what ``localabort[postgresql]``
    installs) can wait for a notification with a timeout; with another
    driver, or on SQLite, the caller polls.
    """
    if url.get_backend_name() != "postgresql" or url.get_driver_name() != "psycopg":
        return None
    import psycopg

    conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True,
                           connect_timeout=10)  # fmt: skip
    conn.execute(f"LISTEN {CHANNEL}")
    return Listener(conn)
