"""The manager thread: wake-ups under interleavings forced on purpose, and jobs sent ahead to busy workers."""

from __future__ import annotations

import os

import pytest

from localabort import ABORTED, PENDING, SUCCESS, TaskAborted, WorkerLost, _manager

from . import tasks
from .conftest import pool, started, wait_for


def test_a_submit_during_a_wake_up_is_not_lost(store_path, monkeypatch):
    """A submit landing while the manager handles a wake-up must not silence later wake-ups."""
    with pool(store_path, "fork", 1) as ex:
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2  # the manager now waits with no timeout
        real_read = os.read
        injected = []

        def read(fd, size):
            if fd == ex._scheduler.wake_r and not injected:
                injected.append(ex.submit(tasks.add, 2, 2))  # lands mid wake-up
            return real_read(fd, size)

        monkeypatch.setattr(_manager.os, "read", read)
        assert ex.submit(tasks.add, 3, 3).result(timeout=10) == 6
        assert injected[0].result(timeout=10) == 4
        monkeypatch.undo()
        assert ex.submit(tasks.add, 4, 4).result(timeout=10) == 8  # lost wake-ups would time out here


# -- a job sent ahead: a busy worker holds the job it runs next ------------------------


def sent_ahead(future) -> bool:
    """Handed to a busy worker, not started: running() as in concurrent.futures, state still PENDING."""
    return future.running() and future.state == PENDING


def test_a_task_sent_ahead_and_aborted_never_runs(start_method, store_path, tmp_path):
    with pool(store_path, start_method, 1) as ex:
        blocker = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
        ahead = ex.submit(tasks.touch, str(tmp_path / "ran"))
        wait_for(lambda: started(blocker) and sent_ahead(ahead), what="a task sent ahead")
        assert ahead.abort() is True
        with pytest.raises(TaskAborted, match="before it started"):
            ahead.result(timeout=5)  # at once, not when the blocker ends
        assert ex.store.get(ahead.id).state == ABORTED and not blocker.done()
        (tmp_path / "go").touch()
        assert blocker.result(timeout=30) == "returned without checking"
        assert ex.submit(tasks.add, 2, 3).result(timeout=30) == 5  # the slot goes on after the unrun reply
        later = ex.submit(tasks.Spin)
        wait_for(lambda: started(later))
        assert later.abort() is True  # the recalled job's flag word does not hide a later abort
        with pytest.raises(TaskAborted):
            later.result(timeout=30)
    assert not (tmp_path / "ran").exists()


def test_a_task_sent_ahead_of_a_dying_worker_runs_on_its_replacement(start_method, store_path, tmp_path):
    with pool(store_path, start_method, 1) as ex:
        doomed = ex.submit(tasks.KilledOnFile, str(tmp_path / "die"))
        ahead = ex.submit(tasks.add, 2, 3)
        wait_for(lambda: started(doomed) and sent_ahead(ahead), what="a task sent ahead")
        (tmp_path / "die").touch()
        with pytest.raises(WorkerLost):
            doomed.result(timeout=30)
        assert ahead.result(timeout=30) == 5 and ex.store.get(ahead.id).state == SUCCESS


def test_a_task_sent_ahead_is_running_so_cancel_and_shutdown_leave_it_to_complete(store_path, tmp_path):
    """A job a worker holds counts as running, as in concurrent.futures: cancel() and cancel_futures skip it."""
    with pool(store_path, "fork", 1) as ex:
        blocker = ex.submit(tasks.WaitForFile, str(tmp_path / "go"))
        ahead = ex.submit(tasks.touch, str(tmp_path / "ran"))
        queued = ex.submit(tasks.add, 2, 2)
        wait_for(lambda: started(blocker) and sent_ahead(ahead), what="a task sent ahead")
        assert ahead.cancel() is False and queued.cancel() is True
        ex.shutdown(wait=False, cancel_futures=True)
        (tmp_path / "go").touch()
    assert blocker.result() == "returned without checking"
    assert ahead.result() == str(tmp_path / "ran") and (tmp_path / "ran").exists()
    assert ex.store.get(ahead.id).state == SUCCESS and ex.store.get(queued.id).state == ABORTED
