"""Progress bars in the producer: Executor(progress=...)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from localabort import Executor

from . import tasks
from .conftest import ROOT, pool, wait_for


class Terminal(io.StringIO):
    """What tqdm draws on a terminal, kept to be read."""

    def isatty(self):
        return True


def test_executor_draws_batch_and_task_bars(store_path):
    out = Terminal()

    def drawn(text):
        return text in out.getvalue()

    with pool(store_path, "fork", 2, progress=out) as ex:
        futures = [ex.submit(tasks.Crunch, 3), ex.submit(tasks.Fail, "x")]
        futures[0].result(timeout=30)
        futures += [ex.submit(tasks.Ticker, 60) for _ in range(2)]
        wait_for(lambda: all(f.state == "STARTED" for f in futures[2:]), what="both Tickers to start")
        label = f"Ticker {futures[2].id[-8:]}"  # the end of its id: a batch's ids start alike
        wait_for(lambda: drawn(label), what=f"a running task's own bar; drawn so far: {out.getvalue()[-400:]!r}")
        futures[3].abort()
        futures[2].abort()
        for f in futures:
            f.exception(timeout=30)
    lines = out.getvalue().replace("\r", "\n").splitlines()
    final = [line for line in lines if "4/4" in line][-1]  # it does not read like success:
    assert final.startswith("batch (2 ABORTED, 1 FAILURE): 100%") and "ok=1 aborted=2 failed=1" in final, final


def test_bars_not_on_a_terminal_are_plain_lines_and_a_summary(store_path, tmp_path):
    log = tmp_path / "batch.log"
    with open(log, "w") as out, pool(store_path, "fork", 2, progress=out) as ex:
        futures = [ex.submit(tasks.Crunch, 1000) for _ in range(6)] + [ex.submit(tasks.Fail, "x")]
        for f in futures:
            f.exception(timeout=30)
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text  # no cursor moves, no escape codes
    lines = text.splitlines()
    assert len(lines) <= 3 and lines[-1] == "batch: 7/7 done: ok=6 aborted=0 failed=1", lines


def test_a_key_labels_its_task_bar(store_path):
    out = Terminal()
    with pool(store_path, "fork", 1, progress=out) as ex:
        fut = ex.apply_async(tasks.Ticker, (60,), key="2026-11.csv")
        wait_for(lambda: "Ticker 2026-11.csv" in out.getvalue(), what="the bar labelled by the key")
        fut.abort()
        fut.exception(timeout=30)


def test_bars_go_to_stderr_when_asked_and_nowhere_otherwise(store_path, capsys):
    with Executor(max_workers=1, store=store_path, mp_context="fork") as ex:
        ex.submit(tasks.Crunch, 10).result(timeout=30)
    assert capsys.readouterr().err == ""
    with Executor(max_workers=1, store=store_path, mp_context="fork", progress=True) as ex:
        ex.submit(tasks.Crunch, 10).result(timeout=30)
    assert capsys.readouterr().err.endswith("batch: 1/1 done: ok=1 aborted=0 failed=0\n")  # not a terminal here


BARE_SCRIPT = """
import sys
from localabort import Executor
from tests import tasks
ex = Executor(max_workers=2, store=sys.argv[1], mp_context="fork", progress=True)
futures = [ex.submit(tasks.Deaf, 60) for _ in range(3)]
for f in futures:
    f.result()
"""


def test_bars_on_a_terminal_leave_the_traceback_of_a_ctrl_c_whole(store_path):
    """A script without ``with`` dies of Ctrl-C while its bars are drawn: its traceback must read whole."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a size
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SCRIPT, store_path], stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    os.close(slave)
    seen = []

    def read_until(text):
        deadline = time.monotonic() + 30
        while text not in "".join(seen):
            assert time.monotonic() < deadline, f"never saw {text!r}: {''.join(seen)!r}"
            if select.select([master], [], [], 1)[0]:
                try:
                    seen.append(os.read(master, 65536).decode(errors="replace"))
                except OSError:  # the terminal closed: the script has exited
                    return

    try:
        read_until("it/s")  # the task bars are drawn
        os.killpg(proc.pid, signal.SIGINT)
        read_until("press Ctrl-C again")
        os.killpg(proc.pid, signal.SIGINT)
        read_until("\x00never")  # to the end
        assert proc.wait(timeout=30) == -signal.SIGINT
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    screen = render("".join(seen))
    first = next(i for i, row in enumerate(screen) if row.startswith("Traceback (most recent call last):"))
    last = next(i for i, row in enumerate(screen) if row.startswith("KeyboardInterrupt"))
    traceback = "\n".join(screen[first : last + 1])
    assert "it/s" not in traceback and "%|" not in traceback, traceback  # no bar left in or drawn into it
    written = "".join(seen)  # what follows is written, whatever the bars later draw over it
    assert "localabort: terminating 2 tasks" in written and "batch (3 ABORTED)" in written, written[-2000:]


def test_the_traceback_hook_passes_over_a_bar_still_being_made(monkeypatch):
    """tqdm lists a bar before its ``__init__`` gives it a position: a Ctrl-C landing then must not break the hook.

    (The progress thread may be making a bar at the moment the main thread
    dies of Ctrl-C; the hook then raised ``AttributeError`` over the traceback.)
    """
    from tqdm import tqdm

    from localabort.progress import traceback_above_bars

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: printed.append(exc[0]))
    traceback_above_bars()
    half_made = tqdm.__new__(tqdm)  # listed in tqdm._instances, no ``pos`` yet
    try:
        sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    finally:
        tqdm._instances.discard(half_made)
    assert printed == [KeyboardInterrupt]


def render(output):
    """The rows a terminal shows for ``output``: enough of one for tqdm (carriage return, newline, cursor up)."""
    rows, row, col = [[]], 0, 0
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows += [[] for _ in range(row + 1 - len(rows))]
        elif token == "\x1b[A":
            row = max(0, row - 1)
        elif not token.startswith("\x1b"):
            line = rows[row]
            line += [" "] * (col + 1 - len(line))
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in rows]


def test_the_batch_line_counts_tasks_waiting_to_retry():
    from localabort.progress import Bars, TaskView

    out = io.StringIO()
    bars = Bars(file=out)
    bars.update([TaskView("a", "jobs.Fetch", "RETRY", None), TaskView("b", "jobs.Fetch", "SUCCESS", None)])
    bars.close()
    assert out.getvalue().splitlines()[-1] == "batch: 1/2 done: ok=1 aborted=0 failed=0 retrying=1"
