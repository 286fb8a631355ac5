"""The leak check every test runs under (``tests.leaks``) sees each kind of leak: it is a check that can fail."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading

import pytest

from . import leaks

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(leaks, "GRACE", 0.2)


def test_a_thread_left_running_is_a_leak():
    before = leaks.snapshot()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-running", daemon=True)
    thread.start()
    try:
        assert leaks.leaked(before) == ["a thread 'left-running'"]
    finally:
        stop.set()
        thread.join()
    assert leaks.leaked(before) == []


def test_a_child_process_left_running_and_a_descriptor_left_open_are_leaks(tmp_path):
    before = leaks.snapshot()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    db = open(tmp_path / "store.sqlite", "wb")  # left open on purpose
    try:
        found = leaks.leaked(before)
        assert any(item.startswith(f"a child process {child.pid} ") for item in found), found
        assert any(item.startswith("an open SQLite connection") and "store.sqlite" in item for item in found), found
    finally:
        child.kill()
        child.wait()
        db.close()
    assert leaks.leaked(before) == []


def test_a_named_semaphore_kept_is_a_leak():
    before = leaks.snapshot()
    lock = multiprocessing.get_context("spawn").Lock()  # named, until it is collected
    found = leaks.leaked(before)
    assert len(found) == 1 and found[0].startswith("a named semaphore sem."), found
    del lock
    assert leaks.leaked(before) == []
