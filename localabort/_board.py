"""What the dashboard reads from a store and asks of it: plain, JSON-ready dicts, and nothing unpickled.

A ``Board`` answers the page's questions (``_web``) through the store's own
tables: the counts by state, the batches (one per executor) with their
unfinished tasks, the running tasks with their progress, a page of tasks,
and one task in full. It never reads a stored result or exception: those
are pickles, and a reader that shows a store must not run its code. What it
shows is the text the store keeps (``args_repr``, ``error``, ``traceback``).

Pages go by *keyset*, newest first: a page ends with a cursor (the last
row's ``submitted_at`` and id), and the next page starts below it through
the index of ``submitted_at``, so the thousandth page of a store of
1,000,000 tasks costs what the first does.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa

from ._capture import log_text
from ._schema import executors, tasks
from ._sql import RUNNING, STANDING, UNFINISHED
from ._states import ALL_STATES, READY_STATES, STARTED
from ._store import Store

__all__ = ["PAGE", "RATE_WINDOW", "STREAM_WINDOW", "Board"]

#: Tasks in a page of the listing, and the most running tasks a snapshot carries bars for.
PAGE = 50
BARS = 40
#: The most batches (executors) a snapshot lists: those with unfinished tasks, then the newest.
BATCHES = 12
#: Seconds of a batch the task stream spans: its last ones, up to now (or to the batch's end).
STREAM_WINDOW = 120.0
#: The most bars the task stream carries: the tasks that ended last, and the running ones.
STREAM_BARS = 2000
#: Seconds of a batch's plot of tasks finished per second.
RATE_WINDOW = 60
#: The finished tasks are counted again once this many times as long as their last count took has passed.
RECOUNT = 10
#: A count of the finished tasks that took less than this (seconds) is made afresh for every snapshot.
CHEAP = 0.02

#: A task's fields in the listing and the running bars (the detail adds ``_DETAIL``).
_LISTED = (
    "id", "name", "state", "executor_id", "key", "submitted_at", "started_at", "finished_at",
    "progress_done", "progress_total", "abort_requested_at", "error", "retries",
)  # fmt: skip
_DETAIL = ("args_repr", "traceback", "abort_by", "terminate_at", "eta", "worker_pid", "cpu_seconds", "peak_rss")


class Board:
    """The dashboard's view of one store.

    >>> import os, tempfile
    >>> from localabort import Executor
    >>> path = os.path.join(tempfile.mkdtemp(), "b.sqlite")
    >>> with Executor(max_workers=1, store=path) as ex:
    ...     task_id = ex.submit(divmod, 7, 2).id
    >>> board = Board(Store.open(path))
    >>> board.snapshot()["counts"]
    {'SUCCESS': 1}
    >>> board.task(task_id)["args_repr"]
    '7, 2'
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._finished = _Costly(_count_finished)
        self._unfinished = _Costly(_count_unfinished)

    def warm(self) -> None:
        """Count the tasks now, so that the first page opened need not wait for it (a store away: left to the page)."""
        try:
            self._finished.get(self.store.engine)
            self._unfinished.get(self.store.engine)
        except Exception:  # the page's first snapshot meets it again, and says what it is
            pass

    def snapshot(
        self,
        *,
        state: Optional[str] = None,
        name: Optional[str] = None,
        executor: Optional[str] = None,
        before: Optional[str] = None,
        limit: int = PAGE,
    ) -> Dict[str, Any]:
        """Everything the page shows at once: counts, batches, running tasks, and one page of tasks.

        ``state``, ``name`` (a part of it, in any case) and ``executor``
        filter the page; ``name`` and ``executor`` the running bars and
        ``running_total`` too. ``before`` is the cursor a previous page ended
        with (``next``), ``None`` for the newest tasks. The running tasks
        and the page are read afresh; the counts too, unless counting takes
        long (``_Costly``): ``counted_at`` says when they were.
        """
        if state is not None and state not in ALL_STATES:
            raise ValueError(f"no state {state!r}; the states are {', '.join(sorted(ALL_STATES))}")
        now = time.time()
        # Each count takes a connection of its own only to count afresh: no stream holds one while another counts.
        finished, finished_at = self._finished.get(self.store.engine)
        unfinished, unfinished_at = self._unfinished.get(self.store.engine)
        with self.store.engine.connect() as conn:
            bars = _filtered(_select(_LISTED), None, name, executor).where(sa.text(RUNNING))
            running = conn.execute(bars.order_by(tasks.c.started_at).limit(BARS)).all()
            running_total = conn.execute(sa.select(sa.func.count()).select_from(bars.subquery())).scalar() or 0
            everywhere = running_total if not (name or executor) else conn.execute(
                sa.select(sa.func.count()).select_from(tasks).where(sa.text(RUNNING))
            ).scalar() or 0  # fmt: skip
            page = conn.execute(_page(state, name, executor, before, limit + 1)).all()  # one more: is there a next?
            batches, batches_total = _batches(conn, unfinished)
            for batch in batches:
                batch["rate"] = _rate(conn, batch, now)
            shown = next((b for b in batches if b["id"] == executor), None if executor or not batches else batches[0])
            stream = None if shown is None else _stream(conn, shown, now)
        counts = dict(finished)
        for _, task_state, n in unfinished:
            counts[task_state] = counts.get(task_state, 0) + n
        counts[STARTED] = everywhere  # read afresh, through the running tasks' own small index
        rows = [_row(r) for r in page[:limit]]
        return {
            "now": now,
            "store": self.store.name,
            "counts": {s: n for s, n in counts.items() if n},
            "counted_at": min(finished_at, unfinished_at),
            "batches": batches,
            "batches_total": batches_total,
            "running": [_row(r) for r in running],
            "running_total": running_total,
            "tasks": rows,
            "next": _cursor(rows[-1]) if len(page) > limit else None,
            "stream": stream,
        }

    def task(self, task_id: str) -> Optional[Dict[str, Any]]:
        """One task in full (its text only: never its pickled result), or ``None`` if the store has no such id.

        ``logs`` is its log as ``localabort logs`` prints it (``""``: none).
        """
        with self.store.engine.connect() as conn:
            found = conn.execute(_select(_LISTED + _DETAIL).where(tasks.c.id == task_id, tasks.c.name != STANDING))
            row = found.first()
        return None if row is None else dict(_row(row), logs=log_text(self.store.log(task_id)))

    def abort(self, task_id: str, terminate_after: Optional[float], by: str) -> Optional[Dict[str, Any]]:
        """Ask a task the store holds to abort, as ``localabort abort`` does; ``None`` if it holds no such task.

        Returns ``{"id": task_id, "met": state}``: the state the request met,
        ``None`` for a task already finished (nothing to ask).
        """
        if self.task(task_id) is None:  # never a standing abort for an id the page did not show
            return None
        return {"id": task_id, "met": self.store.request_abort(task_id, terminate_after, by=by)}

    def abort_batch(self, executor_id: str, terminate_after: Optional[float], by: str) -> List[str]:
        """Ask every unfinished task of one executor to abort; the ids newly asked."""
        return self.store.request_abort_all(terminate_after, by=by, executor_id=executor_id)


class _Costly:
    """A count that may read every row: made afresh if that is cheap, else reused for a while.

    A count that took less than ``CHEAP`` is made for every snapshot; a
    longer one is reused until ``RECOUNT`` times as long as it took has
    passed, so that counting never takes more than a tenth of the time
    (counting the finished tasks of a store of 1,000,000 reads every row:
    half a second). Shared by every page's stream.
    """

    def __init__(self, count: Callable[[Any], Any]) -> None:
        self.count = count
        self.lock = threading.Lock()
        self.value: Any = None
        self.at = 0.0  # wall clock, for the page
        self.made = -float("inf")  # monotonic
        self.cost = 0.0

    def get(self, engine: Any) -> Tuple[Any, float]:
        """The count, and when it was made (a connection of ``engine`` is taken only to count afresh)."""
        with self.lock:
            if self.cost < CHEAP or time.monotonic() - self.made > RECOUNT * self.cost:
                began = time.monotonic()
                with engine.connect() as conn:
                    self.value = self.count(conn)
                self.made, self.at = time.monotonic(), time.time()
                self.cost = self.made - began
            return self.value, self.at


def _count_finished(conn: Any) -> Dict[str, int]:
    """The finished tasks by state: a read of every row."""
    query = sa.select(tasks.c.state, sa.func.count()).where(tasks.c.state.in_(sorted(READY_STATES)))
    return {state: n for state, n in conn.execute(query.group_by(tasks.c.state))}


def _count_unfinished(conn: Any) -> List[Any]:
    """The unfinished tasks by executor and state, through their index: the batches' counts, and the states'."""
    query = sa.select(tasks.c.executor_id, tasks.c.state, sa.func.count()).where(
        sa.text(UNFINISHED), tasks.c.name != STANDING
    )
    return list(conn.execute(query.group_by(tasks.c.executor_id, tasks.c.state)))


def _select(fields: Tuple[str, ...]) -> Any:
    return sa.select(*(tasks.c[f] for f in fields))


def _filtered(query: Any, state: Optional[str], name: Optional[str], executor: Optional[str]) -> Any:
    query = query.where(tasks.c.name != STANDING)
    if state is not None:
        query = query.where(tasks.c.state == state)
    if name:
        query = query.where(tasks.c.name.icontains(name, autoescape=True))
    if executor:
        query = query.where(tasks.c.executor_id == executor)
    return query


def _page(state: Optional[str], name: Optional[str], executor: Optional[str], before: Optional[str], limit: int) -> Any:
    """A page of tasks, newest first, below the cursor ``before``: a range of the ``submitted_at`` index."""
    query = _filtered(_select(_LISTED), state, name, executor)
    if before:
        at, _, after_id = before.partition(":")
        t = float(at)
        # Written as a range of submitted_at (not an OR), so the index bounds the read.
        same_time_newer = sa.and_(tasks.c.submitted_at == t, tasks.c.id >= after_id)
        query = query.where(tasks.c.submitted_at <= t, sa.not_(same_time_newer))
    return query.order_by(tasks.c.submitted_at.desc(), tasks.c.id.desc()).limit(limit)


def _end(batch: Dict[str, Any], now: float) -> float:
    """Where a batch's plots end: now, or when it ended."""
    closed = batch["closed_at"]
    return now if closed is None else min(now, closed)


def _stream(conn: Any, batch: Dict[str, Any], now: float) -> Dict[str, Any]:
    """The task stream of one batch: its tasks that ran in its last ``STREAM_WINDOW`` s (or since it began), as bars.

    Each is ``[id, state, started_at, finished_at, worker_pid]`` (``finished_at``
    ``None`` while it runs). Two reads of small index ranges, however large
    the store: the tasks that ended, through the index by batch and end; the
    running ones, through the running tasks' own index.
    """
    until = _end(batch, now)
    since = max(until - STREAM_WINDOW, batch["started_at"] or 0.0)  # a young batch fills the width
    fields = (tasks.c.id, tasks.c.state, tasks.c.started_at, tasks.c.finished_at, tasks.c.worker_pid)
    mine = tasks.c.executor_id == batch["id"]
    ended = conn.execute(
        sa.select(*fields).where(mine, tasks.c.finished_at >= since, tasks.c.started_at.is_not(None))
        .order_by(tasks.c.finished_at.desc()).limit(STREAM_BARS)
    ).all()  # fmt: skip
    running = conn.execute(sa.select(*fields).where(sa.text(RUNNING), mine).limit(STREAM_BARS)).all()
    return {"executor": batch["id"], "since": since, "until": until, "tasks": [list(r) for r in (*running, *ended)]}


def _rate(conn: Any, batch: Dict[str, Any], now: float) -> List[int]:
    """Tasks of a batch finished in each of its last ``RATE_WINDOW`` whole seconds, oldest first."""
    last = int(_end(batch, now))
    first = last - RATE_WINDOW
    second = (sa.cast(tasks.c.finished_at, sa.Integer) if conn.dialect.name == "sqlite"  # truncated: floor, here
              else sa.cast(sa.func.floor(tasks.c.finished_at), sa.Integer)).label("second")  # fmt: skip
    query = (
        sa.select(second, sa.func.count())
        .where(tasks.c.executor_id == batch["id"], tasks.c.finished_at >= first, tasks.c.finished_at < last)
        .group_by(second)
    )
    counts = [0] * RATE_WINDOW
    for at, count in conn.execute(query):
        if first <= at < last:
            counts[at - first] = count
    return counts


def _cursor(row: Dict[str, Any]) -> str:
    return f"{row['submitted_at']!r}:{row['id']}"


def _row(row: Any) -> Dict[str, Any]:
    """A task row as the page reads it: ``progress`` as ``[done, total]`` (or ``None``), ``abort_requested``."""
    out = dict(row._mapping)
    done, total = out.pop("progress_done"), out.pop("progress_total")
    out["progress"] = None if done is None else [done, total]
    out["abort_requested"] = out["abort_requested_at"] is not None
    return out


def _batches(conn: Any, counted: Sequence[Any]) -> Tuple[List[Dict[str, Any]], int]:
    """The executors to show as batches, and how many there are.

    Those with unfinished tasks (``counted``) come first, then the others,
    each group newest first, ``BATCHES`` in all.
    """
    unfinished: Dict[str, Dict[str, int]] = {}
    for executor_id, state, count in counted:
        unfinished.setdefault(executor_id or "", {})[state] = count
    busy = [e for e in unfinished if e]
    newest = sa.select(executors).order_by(executors.c.started_at.desc()).limit(BATCHES)
    rows = list(conn.execute(newest.where(executors.c.id.in_(busy))))
    if len(rows) < BATCHES:
        rows += list(conn.execute(newest.where(executors.c.id.not_in(busy)).limit(BATCHES - len(rows))))
    total = conn.execute(sa.select(sa.func.count()).select_from(executors)).scalar() or 0
    batches = []
    for row in rows:
        batches.append({
            "id": row.id, "hostname": row.hostname, "pid": row.pid, "started_at": row.started_at,
            "closed_at": row.closed_at, "seen_at": row.flushed_at, "unfinished": unfinished.get(row.id, {}),
        })  # fmt: skip
    return batches, total
