"""Loaded at start-up by every Python process of a ``tests.write_faults`` run (its folder leads ``PYTHONPATH``).

With ``LOCALABORT_TEST_FAULTS`` set, the process's SQLite connections count
their writes in the run's shared counter (``tests.write_faults.install``);
without it, nothing happens.
"""

import os

if os.environ.get("LOCALABORT_TEST_FAULTS"):
    from tests.write_faults import install

    install()
