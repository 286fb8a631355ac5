"""An SQLite store read with the ``sqlite3`` module alone: ``localabort status`` in the time of a bare interpreter.

Opening a store as ``Store`` does costs SQLAlchemy's import (a quarter of
a second here, most of a ``status`` on a small store), though a listing
needs none of it: its SQL is text (``_listing``). ``Reader.open`` opens a
store file given by path with ``sqlite3``, and answers only when a reader
would find nothing to do but read: a file of this localabort's schema
whose every open executor is alive. Anything else (a URL, a missing or
foreign file, an older or newer schema, an executor that died and whose
tasks are to be recovered, any error) is left to ``Store.open``, which
says it in its own words or does the work; so both ways give one answer.

>>> import os, tempfile
>>> from localabort._store import Store
>>> path = os.path.join(tempfile.mkdtemp(), "s.sqlite")
>>> Reader.open(path) is None  # no store there: Store.open says so
True
>>> _ = Store.open(path, create=True)
>>> reader = Reader.open(path)
>>> reader.counts(finished=False)
{'finished': 0}
>>> reader.close()
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import sqlite3
import time
from typing import Any, Iterable, Iterator, List, Optional

from ._errors import StoreError
from ._listing import Listing, ascii_json
from ._procs import Registered, gone, pid_namespace
from ._sql import EXECUTORS, TASKS, reason
from ._sqlite import connect, prepare

__all__ = ["PIECES", "PIECE_ROWS", "Reader"]

#: How many pieces of a whole listing are written at once (``Reader.json_pieces``): on 2 cores, 4 pieces end
#: sooner than 2 (the last to end waits less); on one core, a thread costs less than a millisecond.
PIECES = 4
#: A listing of fewer than twice this many tasks is written in one piece: a thread would cost more than it saves.
PIECE_ROWS = 5000


class Reader(Listing):
    """The listings of one SQLite store, on a ``sqlite3`` connection of its own (``Reader.open`` makes one)."""

    postgres = False

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.name, self._conn = path, conn

    @classmethod
    def open(cls, spec: str) -> Optional[Reader]:
        """A reader of the store file ``spec`` (a path), or ``None`` where ``Store.open`` is to answer."""
        if "://" in spec:
            return None
        path = os.path.abspath(os.path.expanduser(spec))
        if not os.path.isfile(path):
            return None
        try:
            conn = connect(path)
        except sqlite3.Error:
            return None
        try:
            if _current(conn):
                return cls(path, conn)
        except sqlite3.Error:
            pass
        conn.close()
        return None

    def close(self) -> None:
        self._conn.close()

    def json_pieces(
        self,
        ids: Optional[Iterable[str]] = None,
        *,
        states: Optional[Iterable[str]] = None,
        name: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Iterator[str]:
        """``Listing.json_pieces``; a whole listing (no ids, no limit) is written by SQLite, in parallel.

        SQLite spends a listing's time writing its JSON (3 µs an object
        here), in C, without the GIL. So the store's tasks are cut into
        ``PIECES`` ranges of ``submitted_at`` of about equal size, and each
        range's objects are written and joined (``group_concat``) on a
        connection and thread of its own: no Python object per task, and
        every core at work. Each piece comes as soon as it is written, so
        the first are printed while the last are still being written.
        """
        if ids is not None or limit is not None:
            yield from super().json_pieces(ids, states=states, name=name, limit=limit)
            return
        cuts = self._cuts(PIECES)
        builder = self._json_object()  # one time for every piece's ``age_seconds``
        with concurrent.futures.ThreadPoolExecutor(len(cuts) + 1) as threads:
            found = [threads.submit(self._joined, builder, states, name, newer, older)
                     for newer, older in zip([None, *cuts], [*cuts, None])]  # fmt: skip
            for piece in found:  # each as soon as it and those before it are written
                text = piece.result()
                if text:
                    yield text

    def _cuts(self, count: int) -> List[float]:
        """The ``submitted_at`` of every ``total / count``-th task, newest first: where to cut a listing in pieces."""
        with self._reading() as cur:
            cur.execute(f"SELECT count(*) FROM {TASKS}")
            ((total,),) = cur.fetchall()
            cuts = []
            for i in range(1, count if total >= PIECE_ROWS * 2 else 1):
                cur.execute(f"SELECT submitted_at FROM {TASKS} WHERE submitted_at IS NOT NULL "
                            f"ORDER BY submitted_at DESC LIMIT 1 OFFSET {total * i // count}")  # fmt: skip
                cuts += [at for (at,) in cur.fetchall()]
        return cuts

    def _joined(
        self, builder: str, states: Optional[Iterable[str]], name: Optional[str], newer: Optional[float],
        older: Optional[float],
    ) -> str:  # fmt: skip
        """The JSON objects (``builder``) of the tasks in ``states`` named ``name``, submitted before ``newer`` and
        at or after ``older`` (``None``: no bound), joined in one string. Tasks with no ``submitted_at`` are oldest."""
        where = []
        if older is not None:
            where.append("submitted_at >= :older")
        if newer is not None:
            where.append(
                "submitted_at < :newer" if older is not None else "(submitted_at < :newer OR submitted_at IS NULL)"
            )
        query, params = self._select(f"{builder} AS listed", None, states, name, None, where)
        params.update(newer=newer, older=older)
        with self._reading(own=True) as cur:
            cur.execute(_JOINED.format(query=query), params)
            ((joined,),) = cur.fetchall()
        if joined is None or joined.isascii():
            return joined or ""
        return ",\n".join(ascii_json(line) for line in joined.split(",\n"))  # JSON has no newline in a string

    @contextlib.contextmanager
    def _reading(self, own: bool = False) -> Iterator[Any]:
        """``Listing._reading``; ``own``: on a connection of its own, for a thread of its own."""
        try:
            conn = connect(self.name) if own else self._conn
            cursor = conn.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
                if own:
                    conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.name}: cannot read the store ({reason(exc)})") from exc

    def __repr__(self) -> str:
        return f"Reader({self.name!r})"


# Joined in the subquery's order: SQLite 3.44 says so in the aggregate; before, SQLite keeps a FROM
# subquery's ORDER BY when the query around it is an aggregate of that one source, with no ORDER BY of its own.
_JOINED = (
    "SELECT group_concat(listed, ',\n' ORDER BY _newest DESC) FROM ({query})"
    if sqlite3.sqlite_version_info >= (3, 44)
    else "SELECT group_concat(listed, ',\n') FROM ({query})"
)


def _current(conn: sqlite3.Connection) -> bool:
    """Whether the store of ``conn`` has this localabort's schema, and no dead executor whose tasks await recovery."""
    if prepare(conn, create=False) is None:
        return False
    columns = ", ".join(Registered._fields)
    open_executors = conn.execute(f"SELECT {columns} FROM {EXECUTORS} WHERE closed_at IS NULL").fetchall()
    host, here, now = socket.gethostname(), pid_namespace(), time.time()
    return not any(gone(Registered(*row), host, here, now) for row in open_executors)
