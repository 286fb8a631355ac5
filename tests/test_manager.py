"""The manager thread: wake-ups, under interleavings forced on purpose."""

from __future__ import annotations

import os

from localabort import _manager

from . import tasks
from .conftest import pool


def test_a_submit_during_a_wake_up_is_not_lost(store_path, monkeypatch):
    """A submit landing while the manager handles a wake-up must not silence later wake-ups."""
    with pool(store_path, "fork", 1) as ex:
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2  # the manager now waits with no timeout
        real_read = os.read
        injected = []

        def read(fd, size):
            if fd == ex._manager._wake_r and not injected:
                injected.append(ex.submit(tasks.add, 2, 2))  # lands mid wake-up
            return real_read(fd, size)

        monkeypatch.setattr(_manager.os, "read", read)
        assert ex.submit(tasks.add, 3, 3).result(timeout=10) == 6
        assert injected[0].result(timeout=10) == 4
        monkeypatch.undo()
        assert ex.submit(tasks.add, 4, 4).result(timeout=10) == 8  # lost wake-ups would time out here
