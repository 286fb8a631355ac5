"""Every store write may fail: a mixed batch, with the N-th write failing, for every N, under each start method.

The fault is injected at the DB-API boundary, in every process of the
run: the executor's own, its recorder (which makes most writes) and its
workers, whichever start method made them (``tests/write_faults.py``
says how). The store runs its real code. For every N: nothing hangs;
every future completes, with its result, the task's own exception, or
``BrokenExecutor``; a future's SUCCESS is the store's; no task whose abort
met it PENDING ran; once the executor has settled, every row is final and
``PRAGMA integrity_check`` says ok.

The run is a process of its own, so that the fork server it starts (and
so every process it forks) has the injection from its start.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT
from .write_faults import FOLDER

pytestmark = pytest.mark.timeout(900)

SITE = ROOT / "tests" / "faults_site"


def test_every_write_may_fail_once(start_method, tmp_path):
    counter = tmp_path / "counter"
    counter.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), str(ROOT)]), **{FOLDER: str(counter)})
    done = subprocess.run([sys.executable, "-m", "tests.write_faults", str(tmp_path), start_method],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=880)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().endswith("every check held"), done.stdout[-2000:]
