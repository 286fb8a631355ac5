"""The localabort command, run for real in a subprocess against a store a real executor is writing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from localabort import ABORTED, SUCCESS, TaskAborted, forget
from localabort._schema import task_row
from localabort._store import Store

from . import tasks
from .conftest import pool, wait_for

SCRIPT = Path(sys.executable).parent / "localabort"


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "localabort", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture
def busy(store_path):
    """A store with 3 finished tasks and 2 Tickers running (and reporting progress) in a real executor.

    Yields the finished futures and the running ones.
    """
    with pool(store_path, "fork", 2) as ex:
        done = [ex.submit(tasks.Crunch, n) for n in (3, 4)] + [ex.submit(tasks.Fail, "x")]
        for f in done:
            f.exception(timeout=30)
        running = [ex.submit(tasks.Ticker, 60) for _ in range(2)]
        wait_for(lambda: all(getattr(ex.store.get(f.id), "progress", None) for f in running), what="stored progress")
        yield done, running
        ex.abort_all()


def test_status_json_lists_every_task_newest_first(busy, store_path):
    done, running = busy
    out = cli("status", store_path, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["id"] for r in rows} == {f.id for f in done + running}
    assert [r["id"] for r in rows[:2]] == [f.id for f in reversed(running)]
    live = {r["id"]: r for r in rows}[running[0].id]
    assert live["state"] == "STARTED" and live["name"] == "tests.tasks.Ticker" and live["progress"][0] >= 1
    assert {"id", "name", "state", "progress", "age_seconds"} <= set(live)


def test_status_table_and_filters(busy, store_path):
    done, _ = busy
    table = cli("status", store_path).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "PROGRESS", "AGE", "CPU", "PEAK", "ERROR"]
    assert len(table) == 1 + 5 + 1 and table[-1].startswith("5 of 5 shown; 1 FAILURE, 2 STARTED, 2 SUCCESS")
    assert "ValueError: x" in next(line for line in table if done[2].id in line)
    only = cli("status", store_path, "--state", "SUCCESS", "--state", "FAILURE", "--json").stdout
    assert {r["id"] for r in json.loads(only)} == {f.id for f in done}
    named = cli("status", store_path, "--name", "Crunch", "--limit", "1").stdout.splitlines()
    assert len(named) == 3 and done[1].id in named[1]
    assert named[-1].startswith("1 of 5 shown (--name Crunch, --limit 1 hid the rest)")
    hidden = cli("status", store_path, "--state", "aborted").stdout.splitlines()  # any case
    assert hidden[-1].startswith("0 of 5 shown (--state ABORTED hid the rest)")
    rows = json.loads(cli("status", store_path, "--state", "failure", "--json").stdout)
    assert [(r["state"], r["error"]) for r in rows] == [("FAILURE", "ValueError: x")]
    two = cli("status", store_path, done[0].id[-8:], done[1].id[:24], "--json").stdout  # short forms of ids
    assert {r["id"] for r in json.loads(two)} == {done[0].id, done[1].id}


def test_status_prints_numbers_in_full(store_path):
    with pool(store_path, "fork", 1):
        pass  # an executor creates the store
    store = Store.open(store_path)
    store.write([task_row("big", name="jobs.Count", state="STARTED", submitted_at=1.0, executor_id="e",
                          progress_done=1234567, progress_total=10000000)])  # fmt: skip
    store.write([task_row("half", name="jobs.Count", state="STARTED", submitted_at=1.0, executor_id="e",
                          progress_done=2.5, progress_total=None)])  # fmt: skip
    table = cli("status", store_path).stdout
    assert "1234567/10000000 (12%)" in table and "  2.5  " in table, table


def test_a_task_waiting_to_retry_shows_its_attempts_error_and_next_attempt(store_path):
    with pool(store_path, "fork", 1) as ex:
        fut = ex.apply_async(tasks.Flaky, (5,), default_retry_delay=60)
        wait_for(lambda: fut.state == "RETRY", what="the retry")
        table = cli("status", store_path).stdout
        assert "RETRY" in table and "ConnectionError: attempt 0 failed" in table, table
        shown = cli("show", store_path, fut.id).stdout
        assert re.search(r"^retries: +1; next attempt \S+ \S+ \(in \d+s\)$", shown, re.M), shown
        assert "error:     ConnectionError: attempt 0 failed" in shown
        fut.abort()


def test_control_characters_in_ids_and_names_are_shown_escaped(store_path):
    with pool(store_path, "fork", 1):
        pass  # an executor creates the store
    hostile = "job\x1b]0;owned\x07\x1b[2J"
    Store.open(store_path).write([task_row(hostile, name="jobs.\x1b[31mRed", state="STARTED", submitted_at=1.0,
                                           executor_id="e")])  # fmt: skip
    out = cli("status", store_path).stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "job\\x1b]0;owned\\x07\\x1b[2J" in out and "jobs.\\x1b[31mRed" in out, out


def test_status_marks_running_tasks_asked_to_abort(store_path, tmp_path):
    with pool(store_path, "fork", 1) as ex:
        deaf = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
        wait_for(lambda: getattr(ex.store.get(deaf.id), "progress", None))
        assert "*" not in cli("status", store_path).stdout
        deaf.abort()
        table = cli("status", store_path).stdout.splitlines()
        assert "STARTED*" in table[1] and table[-1].endswith("; * abort requested")
        (tmp_path / "go").touch()
        deaf.result(timeout=30)
    assert "*" not in cli("status", store_path).stdout  # finished: the mark is only for tasks still running


def test_abort_by_id_from_the_command_line(busy, store_path):
    done, running = busy
    out = cli("abort", store_path, running[0].id, done[0].id, "no-such-task")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"abort requested: {running[0].id} (tests.tasks.Ticker, STARTED)",
        f"not aborted: {done[0].id} had already finished (SUCCESS)",
    ]
    assert out.stderr == f"localabort: no task no-such-task in {store_path}\n"
    with pytest.raises(TaskAborted):
        running[0].result(timeout=30)
    assert not running[1].done()


def test_show_one_task(busy, store_path):
    done, running = busy
    failed = cli("show", store_path, done[2].id[-8:])  # as a progress bar labels it
    assert failed.returncode == 0, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[:4] == [
        f"id:        {done[2].id}",
        "name:      tests.tasks.Fail",
        "args:      'x'",
        "state:     FAILURE",
    ]
    assert "error:     ValueError: x" in lines and "traceback:" in lines
    assert failed.stdout.rstrip().endswith("ValueError: x")  # the child's own traceback
    assert f"result:    {[0, 1, 4]!r}" in cli("show", store_path, done[0].id).stdout
    live = json.loads(cli("show", store_path, running[0].id, "--json").stdout)
    assert (live["state"], live["outcome"], live["traceback"]) == ("STARTED", None, None) and live["progress"]
    cli("abort", store_path, running[0].id)
    asked = cli("show", store_path, running[0].id).stdout
    assert re.search(r"^abort: +asked \S+ \S+ \(\d+s ago\) by localabort abort \(pid \d+ on ", asked, re.M), asked
    unknown = cli("show", store_path, "no-such-task")
    assert (unknown.returncode, unknown.stderr) == (1, f"localabort: no task no-such-task in {store_path}\n")


def test_abort_terminate_after_from_the_command_line(store_path):
    with pool(store_path, "fork", 2) as ex:
        deaf = [ex.submit(tasks.Deaf, 60) for _ in range(2)]
        wait_for(lambda: all(getattr(ex.store.get(f.id), "progress", None) for f in deaf), what="stored progress")
        out = cli("abort", store_path, deaf[0].id[-8:], "--terminate-after", "0.3")
        assert out.stdout == (
            f"abort requested: {deaf[0].id} (tests.tasks.Deaf, STARTED); "
            "its worker is killed if it still runs in 0.3s\n"
        ), out.stderr
        with pytest.raises(TaskAborted, match=r"terminated: still running when the terminate_after its abort gave"):
            deaf[0].result(timeout=30)
        assert not deaf[1].done()
        out = cli("abort", store_path, "--all", "--terminate-after", "0")
        assert out.stdout == "abort requested for 1 unfinished task(s); the worker of any still running is killed now\n"
        with pytest.raises(TaskAborted, match=r"terminated: still running when the terminate_after"):
            deaf[1].result(timeout=30)
        assert ex.submit(tasks.add, 1, 2).result(timeout=30) == 3  # the pool goes on


def test_ids_shortened_as_labels_show_them(busy, store_path):
    done, _ = busy
    ambiguous = cli("show", store_path, done[0].id[:8])  # one batch: its ids start alike (time first)
    assert ambiguous.returncode == 1 and "names more than one task" in ambiguous.stderr
    assert cli("show", store_path, "abc").stderr.endswith("(give 4 characters of its id or more)\n")


def test_the_small_things(busy, store_path):
    from localabort import __version__

    assert cli("--version").stdout == f"localabort {__version__}\n"
    both = cli("abort", store_path, "--all", busy[0][0].id)
    assert both.returncode == 2
    assert both.stderr == "localabort: pass TASK_IDs or --all, not both\n"
    negative = cli("status", store_path, "--limit", "-1")
    assert negative.returncode == 2 and "'-1' is not a count" in negative.stderr
    heavy = "('sqlalchemy', 'multiprocessing', 'concurrent')"
    code = (
        "import sys\nfrom localabort.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        f"    print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    imports = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # Neither the database library nor the pool's: help is printed at an interpreter's start-up speed.
    assert imports.stdout.startswith("usage: localabort") and imports.stdout.endswith("\n[]\n"), imports.stdout


def test_abort_all_from_the_command_line(busy, store_path):
    _, running = busy
    out = cli("abort", store_path, "--all")
    assert out.returncode == 0 and out.stdout == "abort requested for 2 unfinished task(s)\n"
    for f in running:
        with pytest.raises(TaskAborted):
            f.result(timeout=30)
    assert cli("abort", store_path).returncode == 2


def test_watch_until_every_task_finishes(store_path, tmp_path):
    with pool(store_path, "fork", 2) as ex:
        futures = [ex.submit(tasks.WaitForFile, str(tmp_path / "go")) for _ in range(3)]
        wait_for(lambda: sum(bool(getattr(ex.store.get(f.id), "progress", None)) for f in futures) == 2)
        watcher = subprocess.Popen([sys.executable, "-m", "localabort", "watch", store_path],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        seen = b""
        while b"tasks:" not in seen:  # watch has read the store and written its first line
            assert select.select([watcher.stderr], [], [], 30)[0], "watch drew nothing"
            seen += os.read(watcher.stderr.fileno(), 65536)
        futures[2].abort()  # the queued one ends ABORTED
        (tmp_path / "go").touch()
        _, rest = watcher.communicate(timeout=60)
    err = (seen + rest).decode()
    assert watcher.returncode == 0, err
    assert err.splitlines()[-1] == "tasks: 3/3 done: ok=2 aborted=1 failed=0", err  # a pipe: plain lines
    assert cli("watch", store_path).stdout == "nothing to watch: every task in the store has finished\n"


def test_forget_finished_tasks(store_path):
    with pool(store_path, "fork", 1) as ex:
        ids = [ex.submit(tasks.add, i, i).id for i in range(3)]
    assert cli("forget", store_path, "--older-than", "1h").stdout == "forgot 0 finished task(s)\n"
    assert cli("forget", store_path, "--older-than", "0").stdout == "forgot 3 finished task(s)\n"
    assert Store.open(store_path).tasks(ids) == []
    assert forget(store_path, older_than=0) == 0


def test_forget_leaves_unfinished_tasks(busy, store_path):
    _, running = busy
    assert forget(store_path, older_than=0) == 3
    assert {r.id for r in Store.open(store_path).tasks()} == {f.id for f in running}


@pytest.mark.parametrize(
    "args, message",
    [
        (["status", "/no/such/store.sqlite"], "localabort: /no/such/store.sqlite: no such store (check the path"),
        (["status", "mysql://u@h/db"], "localabort: mysql://u@h/db: a store is an SQLite file or a PostgreSQL"),
        (["frobnicate", "x"], "localabort: argument command: invalid choice: 'frobnicate'"),
        (["status"], "localabort: the following arguments are required: store"),
        (["forget", "s.sqlite", "--older-than", "soon"], "localabort: argument --older-than: 'soon' is not a duration"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args, message):
    out = cli(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_unreadable_store_is_one_line_and_exit_2(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(4096))
    out = cli("status", junk)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"localabort: {junk}: cannot open as a localabort store (file is not a database)")


@pytest.mark.parametrize("kind", ["foreign database", "zero-byte file"])
@pytest.mark.parametrize(
    "command",
    [["status"], ["watch"], ["show", "t1"], ["abort", "t1"], ["abort", "--all"], ["forget", "--older-than", "0"]],
)
def test_no_command_touches_a_file_that_is_not_a_store(tmp_path, command, kind):
    other = tmp_path / "other_app.db"
    if kind == "zero-byte file":
        other.touch()
    else:
        with contextlib.closing(sqlite3.connect(other)) as conn, conn:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    before = other.read_bytes()
    out = cli(command[0], other, *command[1:])
    what = "is an empty file" if kind == "zero-byte file" else "is a database, but not a localabort store"
    assert out.returncode == 2 and what in out.stderr
    assert other.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["other_app.db"]


@pytest.mark.parametrize("command", [[], ["status"], ["show"], ["abort"], ["watch"], ["forget"]])
def test_help_everywhere(command):
    out = cli(*command, "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: localabort")


def test_console_script(store_path):
    with pool(store_path, "fork", 1) as ex:
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2
    out = subprocess.run([str(SCRIPT), "status", store_path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "tests.tasks.add  SUCCESS" in out.stdout


def test_key_resumes_a_finished_task_without_running_it(store_path):
    with pool(store_path, "fork", 1) as first:
        original = first.apply_async(tasks.Crunch, (3,), key="row-7")
        assert original.result(timeout=30) == [0, 1, 4]
        failing = first.apply_async(tasks.Fail, ("x",), key="row-8")
        failing.exception(timeout=30)
    with pool(store_path, "fork", 1) as second:
        again = second.apply_async(tasks.Crunch, (3,), key="row-7")
        assert again.done() and again.id == original.id and again.state == SUCCESS
        assert again.result() == [0, 1, 4] and again.progress == (3, 3)
        other = second.apply_async(tasks.Spin, (5,), key="row-7")  # another task under the same key runs
        retried = second.apply_async(tasks.Fail, ("y",), key="row-8")  # only a SUCCESS is resumed
        assert other.result(timeout=30) == 5 and other.id != original.id
        with pytest.raises(ValueError, match="y"):
            retried.result(timeout=30)
    assert len(Store.open(store_path).tasks()) == 4


def test_aborted_keyed_task_runs_again(store_path):
    with pool(store_path, "fork", 1) as ex:
        fut = ex.apply_async(tasks.Spin, key="k")
        fut.abort()
        with pytest.raises(TaskAborted):
            fut.result(timeout=30)
        assert ex.apply_async(tasks.Spin, (3,), key="k").result(timeout=30) == 3
    assert {r.state for r in Store.open(store_path).tasks()} == {ABORTED, SUCCESS}
