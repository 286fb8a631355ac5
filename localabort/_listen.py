"""Word of new abort requests from the database itself: PostgreSQL's ``LISTEN``/``NOTIFY``.

Every abort request on a PostgreSQL store also sends a notification on the
channel ``CHANNEL``, in the transaction that records it, so it is
delivered when (and only if) the request is committed. A process that
watches tasks (``_watch``) holds one listening connection and reads the
store when a notification comes, instead of reading it every few
milliseconds: an abort arrives in about a millisecond, at no cost while
none is asked.

A notification is a hint, never the record: the watcher still reads the
rows, and still reads them now and then without one, so a notification
lost with a dropped connection costs latency, not the abort.

SQLite has no such thing; there ``listener`` returns ``None`` and the
watcher polls.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["CHANNEL", "Listener", "listener"]

#: The channel of abort notifications; the payload is the task's id ("*": several tasks).
CHANNEL = "localabort_abort"


class Listener:
    """One connection that listens on ``CHANNEL`` (psycopg 3's own, outside SQLAlchemy's pool)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a notification; whether one (or more) came. Takes every one queued."""
        came = False
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            came = True
        if came:  # the rest of a burst, without waiting: one read answers them all
            for _ in self._conn.notifies(timeout=0.0):
                pass
        return came

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

    conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return Listener(conn)
