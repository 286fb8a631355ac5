"""The ``localabort`` command: watch, abort and tidy the tasks of a store from a terminal or a script.

::

    localabort status STORE [--state STATE]... [--name TEXT] [--limit N] [--json]
    localabort show STORE TASK_ID [--json]
    localabort abort STORE TASK_ID... | --all
    localabort watch STORE
    localabort forget STORE --older-than AGE

Exit status: 0 on success; 1 when a task named is unknown; 2 on bad usage
or an unreadable store, with one line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from typing import Any, Dict, NoReturn, Optional, Sequence

from ._errors import StoreError, UnknownTask
from ._states import ALL_STATES, READY_STATES, SUCCESS, UNREADY_STATES
from ._store import Store, TaskRecord

__all__ = ["main"]

#: How often ``watch`` reads the store, in seconds.
WATCH_INTERVAL = 0.25


class _Usage(Exception):
    """Bad usage: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{message} (see: {self.prog} --help)")


def _duration(text: str) -> float:
    """``"90"``, ``"30s"``, ``"15m"``, ``"12h"`` or ``"7d"`` in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age: write 90, 30s, 15m, 12h or 7d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="localabort", description="Watch, abort and tidy the tasks of a localabort store.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    status_parser = commands.add_parser("status", help="list tasks, newest first")
    status_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    status_parser.add_argument("--state", action="append", choices=sorted(ALL_STATES), help="only tasks in this state")
    status_parser.add_argument("--name", help="only tasks whose name contains this text")
    status_parser.add_argument(
        "--limit", type=int, default=None, help="at most this many (table: 50 by default; 0: all)"
    )
    status_parser.add_argument("--json", action="store_true", help="print a JSON array of objects, for scripts")

    show_parser = commands.add_parser("show", help="one task: its state, times, result or error and traceback")
    show_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    show_parser.add_argument("task_id", metavar="TASK_ID", help="the task")
    show_parser.add_argument("--json", action="store_true", help="print a JSON object, for scripts")

    abort_parser = commands.add_parser("abort", help="ask tasks to abort")
    abort_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    abort_parser.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="the tasks to abort")
    abort_parser.add_argument("--all", action="store_true", help="every unfinished task in the store")

    watch_parser = commands.add_parser(
        "watch", help="progress bars until every task finishes (Ctrl-C to stop watching)"
    )
    watch_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")

    forget_parser = commands.add_parser("forget", help="delete finished tasks older than an age")
    forget_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    forget_parser.add_argument(
        "--older-than", type=_duration, required=True, metavar="AGE", help="30s, 15m, 12h, 7d ..."
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return its exit status."""
    try:
        args = _parser().parse_args(argv)
        store = _open(args.store)
        return int(COMMANDS[args.command](store, args))
    except _Usage as exc:
        print(f"localabort: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"localabort: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # | head
        return 0


def _open(spec: str) -> Store:
    return Store.open(spec)  # never creates: a typo or a foreign file is a one-line error, left untouched


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _progress(record: TaskRecord) -> str:
    if record.progress is None:
        return ""
    done, total = record.progress
    return f"{done:g}" if total is None else f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g}"


def _json(record: TaskRecord, now: float) -> Dict[str, Any]:
    return {
        "id": record.id, "name": record.name, "state": record.state,
        "progress": list(record.progress) if record.progress is not None else None,
        "abort_requested": record.abort_requested, "key": record.key, "executor_id": record.executor_id,
        "submitted_at": record.submitted_at, "started_at": record.started_at, "finished_at": record.finished_at,
        "age_seconds": None if record.submitted_at is None else round(now - record.submitted_at, 3),
    }  # fmt: skip


def status(store: Store, args: argparse.Namespace) -> int:
    """Print the store's tasks, newest first, as a table or as JSON."""
    limit = args.limit if args.limit is not None else (0 if args.json else 50)
    records = store.tasks(states=args.state, name=args.name, limit=limit or None)
    now = time.time()
    if args.json:
        print(json.dumps([_json(r, now) for r in records], indent=1))
        return 0
    starred = [r.abort_requested and r.state not in READY_STATES for r in records]
    rows = [("ID", "NAME", "STATE", "PROGRESS", "AGE")] + [
        (r.id, r.name, r.state + ("*" if star else ""),
         _progress(r), "" if r.submitted_at is None else _age(now - r.submitted_at))
        for r, star in zip(records, starred)
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not args.state and not args.name and not (limit and len(records) == limit):
        counts = dict(collections.Counter(r.state for r in records))  # every task is listed: no other read
    else:  # a large store: the finished tasks as one count, for their states are never scanned
        counts = store.counts(finished=False)
    total = sum(counts.values())
    summary = ", ".join(f"{counts[s]:,} {s}" for s in sorted(counts) if s != "finished" or counts[s])
    shown = f"{len(records):,} of {total:,} shown" + (" (--limit 0 shows all)" if len(records) < total else "")
    print(f"{shown}; {summary or 'no tasks'}" + ("; * abort requested" if any(starred) else ""))
    return 0


def show(store: Store, args: argparse.Namespace) -> int:
    """Print one task: what ``status`` says of it, then its outcome and the child's traceback."""
    from ._outcome import load_outcome

    try:
        record = store.lookup(args.task_id)
    except UnknownTask as exc:
        print(f"localabort: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    outcome = ""
    if record.state in READY_STATES:
        value, error = load_outcome(record.state, record.result, record.traceback)  # a store is as trusted as code
        outcome = repr(value) if error is None else f"{type(error).__name__}: {error}"
        outcome = outcome if len(outcome) <= 500 else outcome[:500] + "..."
    if args.json:
        print(json.dumps(dict(_json(record, now), outcome=outcome or None, traceback=record.traceback), indent=1))
        return 0
    fields = [
        ("id", record.id), ("name", record.name),
        ("state", record.state + (" (abort requested)" if record.abort_requested else "")),
        ("progress", _progress(record)), ("key", record.key or ""),
        *[(label, _when(at, now)) for label, at in
          (("submitted", record.submitted_at), ("started", record.started_at), ("finished", record.finished_at))],
        ("result" if record.state == SUCCESS else "outcome", outcome),
    ]  # fmt: skip
    for label, value in fields:
        if value:
            print(f"{label + ':':<11}{value}")
    if record.traceback:
        print(f"traceback:\n{record.traceback.rstrip()}")
    return 0


def _when(at: Optional[float], now: float) -> str:
    if at is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f" ({_age(now - at)} ago)"


def abort(store: Store, args: argparse.Namespace) -> int:
    """Ask tasks to abort; say what was recorded."""
    if args.all == bool(args.task_ids):
        raise _Usage("name the tasks to abort, or pass --all (not both)")
    if args.all:
        ids = store.request_abort_all()
        print(f"abort requested for {len(ids):,} unfinished task(s)")
        return 0
    exit_status = 0
    for task_id in args.task_ids:
        try:
            state = store.request_abort(task_id)
        except UnknownTask as exc:
            print(f"localabort: {exc}", file=sys.stderr)
            exit_status = 1
            continue
        record = store.lookup(task_id)
        if state is not None:  # the state the request met, not what it is by now
            print(f"abort requested: {task_id} ({record.name}, {state})")
        else:
            print(f"not aborted: {task_id} had already finished ({record.state})")
    return exit_status


def watch(store: Store, args: argparse.Namespace) -> int:
    """Show bars for the store's unfinished tasks, and any that start, until all have finished."""
    from .progress import Bars, TaskView

    tracked: Dict[str, TaskRecord] = {r.id: r for r in store.tasks(states=UNREADY_STATES)}
    if not tracked:
        print("nothing to watch: every task in the store has finished")
        return 0
    bars = Bars(max_tasks=8, desc="tasks")
    try:
        while True:
            live = [task_id for task_id, r in tracked.items() if r.state not in READY_STATES]
            for record in store.tasks(live) + store.tasks(states=UNREADY_STATES):
                tracked[record.id] = record
            bars.update([TaskView(r.id, r.name, r.state, r.progress) for r in tracked.values()])
            if all(r.state in READY_STATES for r in tracked.values()):
                return 0
            time.sleep(WATCH_INTERVAL)
    finally:
        bars.close()


def forget(store: Store, args: argparse.Namespace) -> int:
    """Delete finished tasks older than the age given."""
    print(f"forgot {store.forget(args.older_than):,} finished task(s)")
    return 0


COMMANDS: Dict[str, Any] = {"status": status, "show": show, "abort": abort, "watch": watch, "forget": forget}
