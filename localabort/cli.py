"""The ``localabort`` command: watch, abort and tidy the tasks of a store from a terminal or a script.

::

    localabort status STORE [TASK_ID...] [--state STATE]... [--name TEXT] [--limit N] [--json]
    localabort show STORE TASK_ID [--json]
    localabort logs STORE TASK_ID [--follow]
    localabort abort STORE (TASK_ID... | --all) [--terminate-after SECONDS]
    localabort watch STORE
    localabort forget STORE --older-than AGE
    localabort serve STORE [--host HOST] [--port N] [--read-only]
    localabort --version

A TASK_ID may be shortened to any part of it that starts or ends it and
names one task (the progress bars show its last 8 characters).

Exit status: 0 on success; 1 when a task named is unknown; 2 on bad usage
or an unreadable store, with one line on stderr and no traceback.
``--help`` and ``--version`` load no database library, so they are quick.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional, Sequence

from ._procs import asker
from ._states import ALL_STATES, READY_STATES, RETRY, SUCCESS, UNREADY_STATES
from ._text import printable

if TYPE_CHECKING:
    from ._listing import Listing
    from ._record import TaskRecord
    from ._store import Store

__all__ = ["main"]

#: How often ``watch`` reads the store, in seconds.
WATCH_INTERVAL = 0.25
#: The widest error ``status`` prints in its table (``show`` and ``--json`` give it whole).
ERROR_WIDTH = 60
#: Lines of a task's log that ``show`` prints: its last ones.
SHOWN_LINES = 10
#: Seconds between two reads of a task's log by ``logs --follow`` (a worker sends it every half second).
FOLLOW_EVERY = 0.25


class _Usage(Exception):
    """Bad usage: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{message} (see: {self.prog} --help)")


def _duration(text: str) -> float:
    """``"90"``, ``"30s"``, ``"15m"``, ``"12h"`` or ``"7d"`` in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write 90, 30s, 15m, 12h or 7d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _count(text: str) -> int:
    """A whole number of 0 or more, for ``--limit``."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: write 0 or more (0: no limit)")
    return int(text)


def _state(text: str) -> str:
    """A state name, in any case: ``aborted`` is ``ABORTED``."""
    return text.strip().upper()


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="localabort", description="Watch, abort and tidy the tasks of a localabort store.")
    parser.add_argument("--version", action="version", version=f"localabort {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    status_parser = commands.add_parser("status", help="list tasks, newest first")
    status_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    status_parser.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="only these tasks")
    status_parser.add_argument(
        "--state", action="append", type=_state, choices=sorted(ALL_STATES), help="only tasks in this state"
    )
    status_parser.add_argument("--name", help="only tasks whose name contains this text")
    status_parser.add_argument(
        "--limit", type=_count, default=None, help="at most this many (table: 50 by default; 0: all)"
    )
    status_parser.add_argument("--json", action="store_true", help="print a JSON array of objects, for scripts")

    show_parser = commands.add_parser("show", help="one task: its state, times, result or error and traceback")
    show_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    show_parser.add_argument("task_id", metavar="TASK_ID", help="the task")
    show_parser.add_argument("--json", action="store_true", help="print a JSON object, for scripts")

    logs_parser = commands.add_parser("logs", help="what one task printed and logged (its last log_limit bytes)")
    logs_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    logs_parser.add_argument("task_id", metavar="TASK_ID", help="the task")
    logs_parser.add_argument(
        "--follow", "-f", action="store_true", help="go on printing what a running task logs, until it ends"
    )

    abort_parser = commands.add_parser("abort", help="ask tasks to abort")
    abort_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    abort_parser.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="the tasks to abort")
    abort_parser.add_argument("--all", action="store_true", help="every unfinished task in the store")
    abort_parser.add_argument(
        "--terminate-after", type=_duration, metavar="SECONDS",
        help="also kill the worker of a task still running this long from now (0: at once; 30s, 5m ...)",
    )  # fmt: skip

    watch_parser = commands.add_parser(
        "watch", help="progress bars until every task finishes (Ctrl-C to stop watching)"
    )
    watch_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")

    serve_parser = commands.add_parser(
        "serve", help='a live dashboard in the browser (needs the web extra: pip install "localabort[web]")'
    )
    serve_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    serve_parser.add_argument(
        "--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine)"
    )
    serve_parser.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: any free one)")
    serve_parser.add_argument("--read-only", action="store_true", help="serve no actions: no abort from the page")

    forget_parser = commands.add_parser("forget", help="delete finished tasks older than an age")
    forget_parser.add_argument("store", help="the store: a SQLite file or an SQLAlchemy URL")
    forget_parser.add_argument(
        "--older-than", type=_duration, required=True, metavar="AGE", help="30s, 15m, 12h, 7d ..."
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return its exit status."""
    try:
        args = _arguments(argv)  # argparse alone: --help and --version load nothing else
    except _Usage as exc:
        _print(f"localabort: {exc}", file=sys.stderr)
        return 2
    from ._errors import StoreError  # the commands need a store, and its errors

    try:
        store = _open(args.store)
        return int(COMMANDS[args.command](store, args))
    except (_Usage, StoreError) as exc:
        _print(f"localabort: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # | head
        return 0


def _print(text: str, file: Any = None) -> None:
    """Print ``text`` with its control characters escaped: ids, names and errors come from the store."""
    print(printable(text, newlines=True), file=file or sys.stdout)


def _arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "task_ids", None) is not None and not any(x.startswith("-") for x in extra):
        args.task_ids += extra  # ids after an option: ``abort --all ID``, ``status --state X ID``
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _open(spec: str) -> Any:
    """The store ``spec`` names (an SQLite file is read with ``sqlite3`` alone: ``_sqlite``)."""
    from ._store import Store  # here, not at the top: --help and --version need no database library

    return Store.open(spec)  # never creates: a typo or a foreign file is a one-line error, left untouched


def _resolve(store: Listing, text: str) -> str:
    """The id of the one task ``text`` names: the whole id, or a part that starts or ends it.

    A whole id with no row is returned as it is: an abort for it may be
    asked before its executor has written it (``Store.request_abort``).
    """
    from ._errors import UnknownTask

    if len(text) >= 32 or store.get(text) is not None:
        return text
    found = store.match(text) if len(text) >= 4 else []
    if not found:
        short = "" if len(text) >= 4 else " (give 4 characters of its id or more)"
        raise UnknownTask(f"no task {text} in {store.name}{short}")
    if len(found) > 1:
        raise UnknownTask(f"{text} names more than one task ({', '.join(found[:3])}...); give more of the id")
    return found[0]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _number(x: float) -> str:
    """``1234567``, not ``1.23457e+06``: whole numbers in full, others to 2 decimals."""
    return str(int(x)) if x == int(x) else f"{x:.2f}".rstrip("0").rstrip(".")


def _progress(record: TaskRecord) -> str:
    if record.progress is None:
        return ""
    done, total = record.progress
    if not total:
        return _number(done)
    return f"{_number(done)}/{_number(total)} ({100 * done / total:.0f}%)"


def _clip(text: Optional[str], width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 3] + "..."


def status(store: Listing, args: argparse.Namespace) -> int:
    """Print the store's tasks, newest first, as a table or as JSON."""
    limit = args.limit if args.limit is not None else (0 if args.json else 50)
    ids = [_resolve(store, text) for text in args.task_ids] if args.task_ids else None
    if args.json:  # one object per line, as the database writes them: still one JSON array
        # The pieces are ASCII, and tens of megabytes: bytes, written as they come (a stream without bytes, text).
        out = getattr(sys.stdout, "buffer", None)
        write = sys.stdout.write if out is None else lambda text: out.write(text.encode("ascii"))
        sys.stdout.flush()
        opened = False
        for piece in store.json_pieces(ids, states=args.state, name=args.name, limit=limit or None):
            write(",\n" if opened else "[\n")
            write(piece)
            opened = True
        write("\n]\n" if opened else "[]\n")
        sys.stdout.flush()
        return 0
    records = store.tasks(ids, states=args.state, name=args.name, limit=limit or None, outcomes=False)
    now = time.time()
    starred = [r.abort_requested and r.state not in READY_STATES for r in records]
    rows = [("ID", "NAME", "STATE", "PROGRESS", "AGE", "CPU", "PEAK", "ERROR")] + [
        (r.id, r.name, r.state + ("*" if star else ""),
         _progress(r), "" if r.submitted_at is None else _age(now - r.submitted_at),
         "" if r.cpu_seconds is None else _seconds(r.cpu_seconds), "" if r.peak_rss is None else _bytes(r.peak_rss),
         _clip((r.error or "").replace(f"task {r.id} ", ""), ERROR_WIDTH))  # its id is in the first column
        for r, star in zip(records, starred)
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    filters = _filters(args)
    if not filters and not (limit and len(records) == limit):
        counts = dict(collections.Counter(r.state for r in records))  # every task is listed: no other read
    else:  # a large store: the finished tasks as one count, for their states are never scanned
        counts = store.counts(finished=False)
    total = sum(counts.values())
    summary = ", ".join(f"{counts[s]:,} {s}" for s in sorted(counts) if s != "finished" or counts[s])
    shown = f"{len(records):,} of {total:,} shown"
    if len(records) < total:
        hidden = [*filters, *([] if not limit or len(records) < limit else [f"--limit {limit}"])]
        shown += f" ({', '.join(hidden)} hid the rest" + ("; --limit 0 shows all)" if not filters else ")")
    _print(f"{shown}; {summary or 'no tasks'}" + ("; * abort requested" if any(starred) else ""))
    return 0


def _filters(args: argparse.Namespace) -> List[str]:
    """The options of ``status`` that choose which tasks it lists, as typed."""
    return [
        *([f"{len(args.task_ids)} TASK_ID"] if args.task_ids else []),
        *[f"--state {state}" for state in args.state or []],
        *([f"--name {args.name}"] if args.name else []),
    ]


def show(store: Store, args: argparse.Namespace) -> int:
    """Print one task: what ``status`` says of it, then its outcome and the child's traceback."""
    from ._capture import log_text
    from ._errors import UnknownTask
    from ._outcome import load_outcome

    try:
        record = store.lookup(_resolve(store, args.task_id))
    except UnknownTask as exc:
        _print(f"localabort: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    outcome = ""
    if record.state in READY_STATES:
        value, error = load_outcome(record.state, record.result, record.traceback)  # a store is as trusted as code
        outcome = repr(value) if error is None else f"{type(error).__name__}: {error}"
        outcome = outcome if len(outcome) <= 500 else outcome[:500] + "..."
    logs = log_text(store.log(record.id))
    if args.json:
        (listed,) = store.tasks_json([record.id])  # what ``status --json`` says of it
        shown = dict(json.loads(listed), outcome=outcome or None, traceback=record.traceback, logs=logs)
        print(json.dumps(shown, indent=1))
        return 0
    fields = [
        ("id", record.id), ("name", record.name), ("args", record.args_repr or ""),
        ("state", record.state + (" (abort requested)" if record.abort_requested else "")),
        ("progress", _progress(record)), ("key", record.key or ""),
        *[(label, _when(at, now)) for label, at in
          (("submitted", record.submitted_at), ("started", record.started_at), ("finished", record.finished_at))],
        ("abort", "" if not record.abort_requested else
         f"asked {_when(record.abort_requested_at, now)} by {record.abort_by or 'an older localabort'}"),
        ("terminate", "" if record.terminate_at is None else
         f"its worker killed if still running at {_when(record.terminate_at, now)}"),
        ("retries", "" if not record.retries else str(record.retries) + (
            f"; next attempt {_when(record.eta, now)}" if record.state == RETRY and record.eta else "")),
        ("error", record.error or "" if record.state == RETRY else ""),  # the last attempt's
        ("result" if record.state == SUCCESS else "error", outcome),
        ("used", "" if record.usage is None else _used(record)),
    ]  # fmt: skip
    for label, value in fields:
        if value:
            _print(f"{label + ':':<11}{value}")
    if record.traceback:
        _print(f"traceback:\n{record.traceback.rstrip()}")
    if logs:
        lines = logs.splitlines()
        more = f"; all of it: localabort logs STORE {record.id[:8]}" if len(lines) > SHOWN_LINES else ""
        _print(f"log (its last {min(len(lines), SHOWN_LINES)} lines{more}):")
        for line in lines[-SHOWN_LINES:]:
            _print(f"  {line}")
    return 0


def _seconds(x: float) -> str:
    return f"{x:.2f}s" if x < 100 else _age(x)


def _bytes(n: int) -> str:
    """``48.1 MiB``: bytes in the largest unit that keeps a number of at least 1."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _used(record: TaskRecord) -> str:
    peak = "" if record.peak_rss is None else f", peak memory {_bytes(record.peak_rss)}"
    return f"{_seconds(record.cpu_seconds or 0.0)} CPU{peak}, in worker pid {record.worker_pid}"


def logs(store: Store, args: argparse.Namespace) -> int:
    """Print what one task printed and logged; ``--follow``: and what it goes on logging, until it ends."""
    from ._capture import dropped_line
    from ._errors import UnknownTask

    try:
        task_id = _resolve(store, args.task_id)
        record = store.lookup(task_id)
    except UnknownTask as exc:
        _print(f"localabort: {exc}", file=sys.stderr)
        return 1
    seen = 0  # bytes of its log printed, counted from the start of all it ever logged
    while True:
        log = store.log(task_id)
        if log is not None:
            text, dropped = log
            data = text.encode("utf-8")
            logged = dropped + len(data)  # every byte it logged: those dropped, then those kept
            if logged > seen:
                new = data[max(0, len(data) - (logged - seen)) :]
                if logged - seen > len(data):  # more came since the last look than the store keeps
                    new = dropped_line(logged - seen - len(data)).encode() + new
                sys.stdout.write(printable(new.decode("utf-8", "replace"), newlines=True))
                sys.stdout.flush()
                seen = logged
        if not args.follow or record.state in READY_STATES:
            return 0
        time.sleep(FOLLOW_EVERY)
        record = store.lookup(task_id)


def _when(at: Optional[float], now: float) -> str:
    if at is None:
        return ""
    when = f"{_age(now - at)} ago" if at <= now else f"in {_age(at - now)}"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f" ({when})"


def abort(store: Store, args: argparse.Namespace) -> int:
    """Ask tasks to abort; say what was recorded."""
    from ._errors import UnknownTask

    if args.all and args.task_ids:
        raise _Usage("pass TASK_IDs or --all, not both")
    if not args.all and not args.task_ids:
        raise _Usage("name the tasks to abort, or pass --all")
    after = args.terminate_after
    then = "" if after is None else f"; its worker is killed if it still runs {_in(after)}"
    by = asker("localabort abort")
    if args.all:
        ids = store.request_abort_all(after, by=by)
        then = "" if after is None else f"; the worker of any still running is killed {_in(after)}"
        _print(f"abort requested for {len(ids):,} unfinished task(s){then}")
        return 0
    exit_status = 0
    for text in args.task_ids:
        try:
            task_id = _resolve(store, text)
            state = store.request_abort(task_id, after, by=by)
        except UnknownTask as exc:
            _print(f"localabort: {exc}", file=sys.stderr)
            exit_status = 1
            continue
        record = store.lookup(task_id)
        if state is not None:  # the state the request met, not what it is by now
            _print(f"abort requested: {task_id} ({record.name}, {state})" + (then if state != "PENDING" else ""))
        else:
            _print(f"not aborted: {task_id} had already finished ({record.state})")
    return exit_status


def _in(seconds: float) -> str:
    return "now" if seconds <= 0 else f"in {_number(seconds)}s"


def watch(store: Store, args: argparse.Namespace) -> int:
    """Show bars for the store's unfinished tasks, and any that start, until all have finished."""
    from .progress import Bars, TaskView

    tracked: Dict[str, TaskRecord] = {r.id: r for r in store.tasks(states=UNREADY_STATES, outcomes=False)}
    if not tracked:
        _print("nothing to watch: every task in the store has finished")
        return 0
    from ._store import RECOVER_EVERY

    bars = Bars(max_tasks=8, desc="tasks")
    recover_at = time.monotonic() + RECOVER_EVERY
    try:
        while True:
            if time.monotonic() >= recover_at:  # an executor that died since: its tasks end FAILURE
                store.recover_dead_executors()
                recover_at = time.monotonic() + RECOVER_EVERY
            live = [task_id for task_id, r in tracked.items() if r.state not in READY_STATES]
            for record in store.tasks(live, outcomes=False) + store.tasks(states=UNREADY_STATES, outcomes=False):
                tracked[record.id] = record
            bars.update([TaskView(r.id, r.name, r.state, r.progress, r.key) for r in tracked.values()])
            if all(r.state in READY_STATES for r in tracked.values()):
                return 0
            time.sleep(WATCH_INTERVAL)
    finally:
        bars.close()


def serve(store: Store, args: argparse.Namespace) -> int:
    """Serve the dashboard of the store until Ctrl-C, having printed its URL (which carries its token)."""
    from ._web import Dashboard

    try:
        board = Dashboard(store, host=args.host, port=args.port, read_only=args.read_only)
    except ImportError as exc:  # no web extra: the message says how to install it
        _print(f"localabort: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        _print(f"localabort: {exc.strerror}", file=sys.stderr)
        return 2
    kind = "read-only dashboard" if args.read_only else "dashboard"
    _print(f"localabort: {kind} of {store.name} at {board.url}  (Ctrl-C to stop)", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _print(f"localabort: {args.host} is reachable from other machines, and the token crosses the network in "
               "clear (HTTP): prefer 127.0.0.1 and an SSH tunnel (docs/dashboard.md)", file=sys.stderr)  # fmt: skip
    board.run()
    return 0


def forget(store: Store, args: argparse.Namespace) -> int:
    """Delete finished tasks older than the age given."""
    _print(f"forgot {store.forget(args.older_than):,} finished task(s)")
    return 0


COMMANDS: Dict[str, Any] = {
    "status": status, "show": show, "logs": logs, "abort": abort, "watch": watch, "forget": forget, "serve": serve,
}  # fmt: skip
