"""The CPython ``test_concurrent_futures`` tests localabort does not pass, each with its reason.

Keys are ``Class.test`` with the start method taken out of the class name
(``ProcessPoolForkExecutorTest`` -> ``ProcessPoolExecutorTest``), or a bare
test name for every class. ``docs/from-concurrent-futures.md`` lists the
same differences for users.
"""

from __future__ import annotations

from typing import Dict

#: Tests that read CPython's private attributes, which no other pool has.
PRIVATE: Dict[str, str] = {}

#: Tests of behaviour where localabort differs by design (they must fail: xfail, strict).
DIFFERENT: Dict[str, str] = {}
