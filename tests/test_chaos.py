"""Chaos for the executor for a minute: workers killed at random, every kind of abort, no violation (tests.chaos)."""

from __future__ import annotations

import pytest

from . import chaos

pytestmark = pytest.mark.timeout(300)


def test_a_minute_of_chaos_breaks_no_rule(tmp_path):
    outcomes, violations, kills = chaos.run(60.0, tmp_path)
    assert violations == [], (violations[:20], outcomes)
    assert kills > 10 and sum(outcomes.values()) > 500, (kills, outcomes)
    assert outcomes.get("short: WorkerLost") and outcomes.get("short: unrun") and outcomes.get("soft: soft limit")
