"""What a task says and uses: its log (stdout, stderr, logging records) and its CPU time and peak memory.

In this process first (``Tail``, ``Capture``, ``Usage``), then through real
workers under each start method, the store, the CLI and a script's own
``logging.basicConfig``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from localabort import AbortableAsyncResult, Executor
from localabort._capture import Capture, Tail, Usage
from tests import tasks
from tests.conftest import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "localabort", *args], capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )  # fmt: skip


# -- in this process ------------------------------------------------------------------


def test_a_tail_keeps_the_last_bytes_and_counts_the_rest():
    tail = Tail(100)
    for i in range(1000):
        tail.add(f"line {i:04d}\n")  # 10 bytes each
    text, dropped = tail.text()
    assert text == "".join(f"line {i:04d}\n" for i in range(990, 1000))
    assert dropped == 9900 and len(text.encode()) == 100


def test_a_tail_cut_mid_character_and_a_lone_surrogate_stay_readable_text():
    tail = Tail(9)
    tail.add("ééé" + b"\xff".decode("utf-8", "surrogateescape"))  # 6 bytes of é, then an undecodable byte
    assert tail.text() == ("\ufffdé\\udcff", 3)  # the é cut in two is replaced; the byte kept escaped
    assert tail.text()[0].encode("utf-8")  # valid UTF-8: any store takes it


def test_one_huge_write_keeps_its_end_only():
    tail = Tail(1024)
    tail.add("x" * 10_000_000 + "END\n")
    text, dropped = tail.text()
    assert text.endswith("END\n") and len(text) == 1024 and dropped == 10_000_004 - 1024


def test_capture_tees_prints_and_records_and_the_stream_still_gets_them(capsys):
    capture = Capture(forward=True)
    try:
        capture.begin("t1", 4096)
        print("to stdout")
        print("to stderr", file=sys.stderr)
        logging.getLogger("tests.capture").warning("a record of %s", "t1")
        log, records = capture.end()
        print("after the task")
        assert capture.end() == (None, [])  # nothing between tasks
    finally:
        capture.close()
    assert log is not None and log[1] == 0
    assert "to stdout\n" in log[0] and "to stderr\n" in log[0]
    assert "WARNING tests.capture: a record of t1" in log[0]
    assert [(r["msg"], r["task_id"]) for r in records] == [("a record of t1", "t1")]
    out, err = capsys.readouterr()
    assert "to stdout" in out and "after the task" in out and "to stderr" in err
    assert sys.stdout is not capture._tees[0][1]  # close() put the streams back


def test_a_task_that_closes_stdout_fails_as_on_a_closed_file_and_the_next_task_prints(capsys):
    capture = Capture(forward=False)
    try:
        capture.begin("t1", 4096)
        print("before")
        sys.stdout.close()
        with pytest.raises(ValueError, match="closed file"):
            print("after")
        capture.end()
        capture.begin("t2", 4096)
        print("next task")
        log, _ = capture.end()
    finally:
        capture.close()
    assert log == ("next task\n", 0)
    assert "next task" in capsys.readouterr().out


def test_usage_measures_this_process_peak_since_it_began_not_before():
    import resource

    hog = bytearray(200 * 2**20)
    hog[::4096] = b"x" * len(hog[::4096])
    del hog  # the process's lifetime peak is now 200 MiB above what it holds
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    usage = Usage()
    usage.begin()
    held = bytearray(40 * 2**20)
    held[::4096] = b"x" * len(held[::4096])
    pid, cpu, peak = usage.end()
    usage.close()  # a worker keeps it open for its life; this test's process must not
    assert pid == os.getpid() and cpu >= 0
    assert peak is not None and 40 * 2**20 <= peak <= lifetime - 120 * 2**20


# -- through real workers -------------------------------------------------------------


def test_a_tasks_log_and_usage_reach_the_future_the_store_and_show(start_method, store_path):
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as ex:
        chatty = ex.submit(tasks.Chatty, 3)
        used = ex.submit(tasks.use, 64, 0.3, 0.3)
        assert chatty.result(timeout=60) == 3 and used.result(timeout=60)
    for i in range(3):
        assert f"out {i}\n" in chatty.logs and f"err {i}\n" in chatty.logs
        assert f"WARNING tests.chatty: record {i} of {chatty.id}" in chatty.logs
    assert "from a thread\n" in chatty.logs
    assert AbortableAsyncResult(chatty.id, store=store_path).logs == chatty.logs
    usage = used.usage
    assert usage is not None and usage["worker_pid"] != os.getpid()
    assert usage["cpu_seconds"] >= 0.5  # its own 0.3 s and its child's, waited for
    assert usage["peak_rss"] >= 64 * 2**20
    assert AbortableAsyncResult(used.id, store=store_path).usage == usage
    shown = json.loads(cli("show", store_path, used.id, "--json").stdout)
    assert {k: shown[k] for k in ("worker_pid", "cpu_seconds", "peak_rss")} == usage
    assert shown["logs"] == ""
    text = cli("show", store_path, chatty.id).stdout
    assert "log (its last 10 lines):" in text and "  from a thread" in text
    assert "used:" in cli("show", store_path, used.id).stdout
    listed = cli("status", store_path).stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "STATE", "PROGRESS", "AGE", "CPU", "PEAK", "ERROR"]
    assert " MiB" in next(line for line in listed if used.id in line)


def test_the_log_keeps_its_last_log_limit_bytes_and_says_how_much_it_dropped(store_path):
    with Executor(max_workers=1, store=store_path, log_limit=1000) as ex:
        long = ex.submit(tasks.print_bytes, 100_000)
        one_line = ex.submit(tasks.print_bytes, 10_000_000, 0)
        unkept = ex.apply_async(tasks.print_bytes, (1000,), log_limit=0)
        more = ex.apply_async(tasks.print_bytes, (100_000,), log_limit=10_000)
        assert all(f.result(timeout=60) for f in (long, one_line, unkept, more))
    assert long.logs.startswith("[localabort: 99,000 earlier bytes of this log were dropped]\n")
    assert long.logs.endswith(f"{1249:079d}\n")
    assert one_line.logs.endswith("xxEND\n") and "9,999,000 earlier bytes" in one_line.logs
    assert unkept.logs == ""
    assert len(more.logs.split("\n", 1)[1]) == 10_000
    assert cli("logs", store_path, long.id).stdout == long.logs


def test_logs_follow_prints_a_running_tasks_lines_as_they_come_and_ends_with_it(store_path):
    with Executor(max_workers=1, store=store_path) as ex:
        future = ex.submit(tasks.Chatty, 20, 0.1)
        wait_for(lambda: future.state == "STARTED", what="the task started")
        with subprocess.Popen(
            [sys.executable, "-m", "localabort", "logs", store_path, future.id, "--follow"],
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
        ) as follower:  # fmt: skip
            first = follower.stdout.readline()
            assert not future.done(), "the first line came only once the task had ended"
            assert first.startswith("out 0")
            rest = follower.stdout.read()  # to its end: the command ends with the task (or the test's timeout)
        assert future.result(timeout=60) == 20
    assert follower.returncode == 0
    assert first + rest == future.logs  # each line once, in order, nothing missed


def test_escapes_and_bidi_controls_are_inert_in_the_cli(store_path):
    with Executor(max_workers=1, store=store_path) as ex:
        future = ex.submit(tasks.hostile_text)
        assert future.result(timeout=60)
    assert "\x1b" in future.logs and "\\udce9" in future.logs  # kept as it was, the undecodable byte escaped
    for out in (cli("logs", store_path, future.id).stdout, cli("show", store_path, future.id).stdout):
        assert "\x1b" not in out and "\u202e" not in out and "red" in out


def test_a_task_that_closes_stdout_or_forks_leaves_the_next_task_its_log(start_method, store_path):
    with Executor(max_workers=1, store=store_path, mp_context=start_method) as ex:
        closed = ex.submit(tasks.print_then_close)
        forked = ex.submit(tasks.print_in_fork)
        after = ex.submit(print, "still here")
        assert closed.result(timeout=60) == "I/O operation on closed file."
        assert forked.result(timeout=60) and after.result(timeout=60) is None
    assert closed.logs == "before\n"
    assert "after the fork\n" in forked.logs  # the forked child's own print reached the terminal, not this log
    assert after.logs == "still here\n"


SCRIPT = """
import logging, sys
from localabort import Executor
from tests import tasks

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[%(task_id)s] %(name)s %(levelname)s %(message)s")
    logging.getLogger("main").info("the script's own record")
    with Executor(max_workers=2, mp_context=sys.argv[1]) as ex:
        futures = [ex.submit(tasks.log_records, 2) for _ in range(2)]
        print("ids", *[f.id for f in futures], flush=True)
        [f.result() for f in futures]
"""


def test_a_scripts_basic_config_shows_its_tasks_records_with_their_ids(start_method, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=90, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()[1:]  # "ids ID ID": the tasks print nothing
    assert "[-] main INFO the script's own record" in done.stderr
    for task_id in ids:
        mine = [line for line in done.stderr.splitlines() if line.startswith(f"[{task_id}] tests.chatty")]
        assert mine == [f"[{task_id}] tests.chatty WARNING record {i}" for i in range(2)]


def test_records_forwarded_under_spawn_reach_this_process_handlers_once(store_path):
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.task_id, record.getMessage(), threading.current_thread().name))

    handler = Keep()
    logging.getLogger("tests.chatty").addHandler(handler)
    try:
        with Executor(max_workers=1, store=store_path, mp_context="spawn") as ex:
            future = ex.submit(tasks.Chatty, 3)
            future.result(timeout=60)
    finally:
        logging.getLogger("tests.chatty").removeHandler(handler)
    assert [(t, m) for t, m, _ in seen] == [(future.id, f"record {i} of {future.id}") for i in range(3)]
    assert {name for _, _, name in seen} == {"localabort-logs"}  # not the manager's thread


def test_capture_costs_a_quiet_task_no_message(store_path):
    with Executor(max_workers=1, store=store_path) as ex:
        futures = [ex.submit(pow, 2, i) for i in range(200)]
        assert [f.result(timeout=60) for f in futures] == [2**i for i in range(200)]
    assert all(f.logs == "" for f in futures)
    assert all(f.usage is not None for f in futures)
    with contextlib.closing(sqlite3.connect(store_path)) as conn:
        assert conn.execute("SELECT count(*) FROM localabort_logs").fetchone() == (0,)  # no row written at all
