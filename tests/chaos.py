"""Chaos for the executor: one batch, workers SIGKILLed at random, every kind of abort, and a history per task.

``run(seconds, folder)`` keeps about ``IN_FLIGHT`` tasks going on one
``Executor`` for ``seconds``, while a chaos thread, every ``CHAOS_EVERY``
s, does one of: SIGKILL a random worker (as the OOM killer would), abort a
random task from its future, from another process (the CLI, by id), or with
``terminate_after``. The tasks: short ones that check for an abort every
millisecond, some meant to fail, some retried (``autoretry_for``), some with
a soft or a hard time limit, and some that never check (``Deaf``). Each task
writes its id to ``started`` as it begins.

Then it checks every task against its history (``violations``):

- every task ended: no row is PENDING, RECEIVED, STARTED or RETRY;
- every ``result()`` returned within its timeout;
- ABORTED only where an abort was asked (by the chaos thread, or a soft time
  limit for the tasks that have one);
- ``WorkerLost`` only for a task unfinished when a worker was killed;
  ``TimeLimitExceeded`` only for a task with a hard limit;
- the task's own ``ValueError`` only for a task meant to fail; SUCCESS only
  for one that was not;
- a task that ended unrun (its future cancelled: the abort met it before it
  started) never began, and neither did one whose abort from the CLI met it
  PENDING;
- the future's state is the store's.

``tests/test_chaos.py`` runs it for 60 s; ``nox -s bench -- soak`` for ten
minutes (``tests/benchmarks/bench_soak.py --executor-minutes``).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

from localabort import AbortableTask, Executor, SoftTimeLimitExceeded, TaskAborted, TimeLimitExceeded, WorkerLost
from localabort._states import UNREADY_STATES
from localabort._store import Store

ROOT = Path(__file__).resolve().parent.parent
#: Tasks kept submitted and unfinished at once.
IN_FLIGHT = 40
#: Seconds between two acts of the chaos thread.
CHAOS_EVERY = 0.25
#: What each task kind is, and how often it is submitted.
KINDS = {"short": 60, "fail": 8, "retry": 8, "soft": 6, "hard": 4, "deaf": 6}


def _began(folder: str, task_id: str) -> None:
    with open(os.path.join(folder, "started"), "a") as f:
        f.write(task_id + "\n")


class Short(AbortableTask):
    """Runs ``ms`` milliseconds, checking for an abort every millisecond; fails if asked to."""

    def run(self, folder: str, ms: float, fail: bool = False) -> int:
        _began(folder, self.request.id)
        deadline = time.monotonic() + ms / 1000
        checks = 0
        while time.monotonic() < deadline:
            if self.is_aborted():
                return checks
            checks += 1
            self.progress(checks)
            time.sleep(0.001)
        if fail:
            raise ValueError("meant to fail")
        return checks


class Retried(AbortableTask):
    """Fails its first attempt with ``ConnectionError``, which is retried, then succeeds."""

    autoretry_for = (ConnectionError,)
    default_retry_delay = 0.02

    def run(self, folder: str) -> int:
        _began(folder, self.request.id)
        if self.request.retries == 0:
            raise ConnectionError("first attempt")
        return self.request.retries


class Overrun(AbortableTask):
    """Checks for an abort while it runs past its time limit (given at submit)."""

    def run(self, folder: str, seconds: float) -> str:
        _began(folder, self.request.id)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.is_aborted():
                return "stopped"
            time.sleep(0.002)
        return "done"


class Deaf(AbortableTask):
    """Never checks for an abort: only ``terminate_after`` (or a kill) stops it early."""

    def run(self, folder: str, seconds: float) -> str:
        _began(folder, self.request.id)
        time.sleep(seconds)
        return "done"


class Batch:
    """The batch under chaos, and the history the checks read."""

    def __init__(self, folder: Path, start_method: str) -> None:
        self.folder = str(folder)
        self.store = str(folder / "chaos.sqlite")
        self.ex = Executor(max_workers=3, store=self.store, mp_context=start_method)
        self.futures: Dict[str, Tuple[str, Any]] = {}  # id: (kind, future)
        self.asked: Set[str] = set()  # ids an abort was asked for
        self.met_pending: Set[str] = set()  # ids whose abort from the CLI met them PENDING
        self.kills: List[float] = []  # when a worker was killed
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def submit(self) -> None:
        kind = random.choices(list(KINDS), weights=list(KINDS.values()))[0]
        folder = self.folder
        if kind in ("short", "fail"):
            future = self.ex.submit(Short, folder, random.uniform(2, 30), kind == "fail")
        elif kind == "retry":
            future = self.ex.submit(Retried, folder)
        elif kind == "soft":
            future = self.ex.apply_async(Overrun, (folder, 2.0), soft_time_limit=0.1)
        elif kind == "hard":
            future = self.ex.apply_async(Deaf, (folder, 2.0), time_limit=0.2)
        else:
            future = self.ex.submit(Deaf, folder, random.uniform(0.05, 0.5))
        with self.lock:
            self.futures[future.id] = (kind, future)

    def unfinished(self) -> List[Tuple[str, Any]]:
        with self.lock:
            return [(task_id, future) for task_id, (_, future) in self.futures.items() if not future.done()]

    def chaos(self) -> None:
        while not self.stop.wait(CHAOS_EVERY):
            act = random.choice(["kill", "abort", "abort", "cli", "terminate"])
            live = self.unfinished()
            if act == "kill":
                pids = [slot.pid for slot in self.ex._scheduler.slots if slot.pid is not None and not slot.ended()]
                if pids:
                    with self.lock:
                        self.kills.append(time.time())
                    try:
                        os.kill(random.choice(pids), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            elif live and act in ("abort", "terminate"):
                task_id, future = random.choice(live)
                with self.lock:
                    self.asked.add(task_id)
                future.abort(terminate_after=0.1 if act == "terminate" else None)
            elif live and act == "cli":
                chosen = [task_id for task_id, _ in random.sample(live, min(3, len(live)))]
                with self.lock:
                    self.asked.update(chosen)
                said = _run_beside_forks([sys.executable, "-m", "localabort", "abort", self.store, *chosen])
                with self.lock:
                    self.met_pending.update(re.findall(r"abort requested: (\S+) \(\S+, PENDING\)", said))

    def check(self) -> Tuple[Dict[str, int], List[str]]:
        """What each task ended as, by kind and outcome, and every violation of the module's rules."""
        violations: List[str] = []
        outcomes: Dict[str, int] = {}
        began = set(Path(self.folder, "started").read_text().split()) if os.path.exists(
            os.path.join(self.folder, "started")) else set()  # fmt: skip
        reader = Store(self.store, create=False)
        try:
            rows = {record.id: record for record in reader.tasks(outcomes=False)}
        finally:
            reader.dispose()
        for task_id, (kind, future) in self.futures.items():
            asked = task_id in self.asked
            outcome = _outcome(future)
            outcomes[f"{kind}: {outcome}"] = outcomes.get(f"{kind}: {outcome}", 0) + 1
            row = rows.get(task_id)
            where = f"{kind} [{task_id}]"
            if row is None or row.state in UNREADY_STATES:
                violations.append(f"{where} unfinished in the store ({row and row.state})")
            elif future.done() and row.state != future.state:
                violations.append(f"{where}: the future says {future.state}, the store {row.state}")
            if outcome == "never returned":
                violations.append(f"{where}: result() never returned")
            elif outcome in ("unrun", "aborted") and not asked:
                violations.append(f"{where} ended {outcome} though no one asked for its abort")
            elif outcome == "soft limit" and kind != "soft":
                violations.append(f"{where}: a soft limit it did not have")
            elif outcome == "hard limit" and kind != "hard":
                violations.append(f"{where}: a hard limit it did not have")
            elif outcome == "WorkerLost" and not any(
                (row.submitted_at or 0) - 1 <= at <= (row.finished_at or time.time()) + 1 for at in self.kills
            ):
                violations.append(f"{where}: WorkerLost with no worker killed while it was unfinished")
            elif outcome == "its ValueError" and kind != "fail":
                violations.append(f"{where}: a ValueError, though not meant to fail")
            elif outcome == "SUCCESS" and kind == "fail":
                violations.append(f"{where}: succeeded, though meant to fail")
            elif outcome not in ("SUCCESS", "unrun", "aborted", "soft limit", "hard limit", "WorkerLost",
                                 "its ValueError"):  # fmt: skip
                violations.append(f"{where}: ended with {outcome}")
            if (outcome == "unrun" or task_id in self.met_pending) and task_id in began:
                violations.append(f"{where} began, though its abort met it before it started")
        return outcomes, violations


def _outcome(future: Any) -> str:
    """How a task ended, as its future says: in the words of the checks."""
    if not future.done():
        return "never returned"
    if future.cancelled():
        return "unrun"
    exc = future.exception(timeout=0)
    if exc is None:
        return "SUCCESS"
    for kind, words in ((SoftTimeLimitExceeded, "soft limit"), (TaskAborted, "aborted"), (WorkerLost, "WorkerLost"),
                        (TimeLimitExceeded, "hard limit"), (ValueError, "its ValueError")):  # fmt: skip
        if isinstance(exc, kind):
            return "unrun" if words == "aborted" and "before it started" in str(exc) else words
    return type(exc).__name__


def _run_beside_forks(command: List[str]) -> str:
    """What ``command`` printed, run while the manager may fork a worker at any moment.

    Not through pipes: a pipe made here, or the one ``subprocess`` reports
    a failed ``exec`` on, is inherited by a worker forked in that instant,
    and reading it to its end would wait for that worker to exit (for ever:
    this thread's batch keeps it). Output goes to a file, and with
    ``close_fds=False`` CPython starts the command with ``posix_spawn``,
    which needs no pipe of its own.
    """
    with tempfile.TemporaryFile("w+") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, close_fds=False, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
        out.seek(0)
        return out.read()


def run(seconds: float, folder: Path, start_method: str = "fork") -> Tuple[Dict[str, int], List[str], int]:
    """The batch under chaos for ``seconds``; its outcomes, its violations, and how many workers were killed."""
    batch = Batch(folder, start_method)
    chaos = threading.Thread(target=batch.chaos, name="chaos", daemon=True)
    chaos.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(IN_FLIGHT - len(batch.unfinished())):
                batch.submit()
            time.sleep(0.01)
    finally:
        batch.stop.set()
        chaos.join()
    for _, future in list(batch.futures.values()):
        try:
            future.exception(timeout=60)
        except concurrent.futures.TimeoutError:
            break  # counted as never returned
        except concurrent.futures.CancelledError:
            pass
    batch.ex.shutdown()
    outcomes, violations = batch.check()
    return outcomes, violations, len(batch.kills)
