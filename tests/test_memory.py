"""Memory limits: the soft one asks, the hard one kills, a worker that grew is replaced; real allocating tasks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from localabort import (
    ABORTED,
    FAILURE,
    SUCCESS,
    Executor,
    MemoryLimitExceeded,
    SoftMemoryLimitExceeded,
    TaskAborted,
)
from localabort._memory import parse_size, resident

from . import tasks
from .conftest import pool, wait_for

MB = 1 << 20


def baseline(ex):
    """What a worker of ``ex`` holds before any task takes more, in MiB (under fork, its share of this process too)."""
    return max(ex.submit(tasks.rss).result(timeout=30) for _ in range(4)) // MB + 1


def test_sizes_parse_as_people_write_them_and_bad_ones_say_how():
    assert parse_size("512MiB") == 512 * MB and parse_size("2GB") == 2 * 10**9 and parse_size("100 kb") == 100_000
    assert parse_size(4096) == 4096 and parse_size(None) is None and parse_size("1.5GiB") == 3 * 2**29
    for bad in ("lots", "12 parsecs", -1, 0, "0MB", 1.5, True, "MB"):
        with pytest.raises(ValueError, match=r"memory_limit must be"):
            parse_size(bad, "memory_limit")


def test_the_resident_memory_of_a_process_counts_its_children():
    import subprocess
    import sys

    alone = resident()
    child = subprocess.Popen([sys.executable, "-c", "x = b'1' * (60 << 20); import time; time.sleep(30)"])
    try:
        wait_for(lambda: resident() - alone > 50 * MB, what="the child's 60 MB")
    finally:
        child.kill()
        child.wait()


def test_a_task_that_checks_is_asked_to_abort_at_its_soft_limit(start_method, store_path):
    with pool(store_path, start_method) as ex:
        limit = baseline(ex) + 150
        future = ex.apply_async(tasks.Grow, soft_memory_limit=f"{limit}MiB")
        said = rf"used \d+ MiB, past its soft_memory_limit of {limit} MiB"
        with pytest.raises(SoftMemoryLimitExceeded, match=said) as info:
            future.result(timeout=60)
        assert isinstance(info.value, TaskAborted) and future.state == ABORTED
        assert 100 <= info.value.partial_result < 400  # asked soon after it took 150 MB more
        record = ex.store.get(future.id)
        assert record.state == ABORTED and f"soft_memory_limit of {limit} MiB" in record.abort_by
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2  # the same worker goes on


def test_a_task_that_never_checks_is_killed_at_its_hard_limit_and_the_batch_goes_on(start_method, store_path):
    with pool(store_path, start_method) as ex:
        limit = baseline(ex) + 200
        future = ex.apply_async(tasks.GrowDeaf, memory_limit=limit * MB)
        rest = [ex.submit(tasks.add, i, 1) for i in range(6)]
        with pytest.raises(MemoryLimitExceeded, match=rf"used \d+ MiB, past its memory_limit of {limit} MiB"):
            future.result(timeout=60)
        assert future.state == FAILURE
        assert [f.result(timeout=30) for f in rest] == list(range(1, 7))  # the rest of the batch goes on
        pid = ex.store.get(future.id).worker_pid
        assert not _alive(pid)  # killed, and replaced:
        assert ex.submit(tasks.pid_after).result(timeout=30) != pid
        record = ex.store.get(future.id)
        assert record.state == FAILURE and record.error.startswith("MemoryLimitExceeded:")
    shown = subprocess.run([sys.executable, "-m", "localabort", "show", store_path, future.id], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert "MemoryLimitExceeded" in shown.stdout and f"past its memory_limit of {limit} MiB" in shown.stdout, shown


def test_the_class_attributes_set_the_limits(store_path):
    with pool(store_path, "fork") as ex:
        future = ex.submit(tasks.LimitedGrower)
        with pytest.raises(MemoryLimitExceeded, match="past its memory_limit of 200 MiB"):
            future.result(timeout=60)


def test_the_memory_of_the_processes_a_task_started_counts(start_method, store_path, tmp_path):
    pid_file = tmp_path / "child.pid"
    with pool(store_path, start_method) as ex:
        limit = f"{baseline(ex) + 200}MiB"
        future = ex.apply_async(tasks.ChildGrows, (300, str(pid_file)), soft_memory_limit=limit)
        with pytest.raises(SoftMemoryLimitExceeded) as info:
            future.result(timeout=60)
        assert info.value.partial_result == "stopped"
        pid_file.unlink()
        killed = ex.apply_async(tasks.ChildGrows, (300, str(pid_file)), memory_limit=limit)
        with pytest.raises(MemoryLimitExceeded):
            killed.result(timeout=60)
        child = int(pid_file.read_text())
        wait_for(lambda: not _alive(child), what="the child, killed with its worker's group")


def test_a_task_that_stays_under_its_limits_is_left_alone(start_method, store_path):
    with pool(store_path, start_method) as ex:
        base = baseline(ex)
        future = ex.apply_async(tasks.Spiky, (80,), soft_memory_limit=(base + 300) * MB, memory_limit=(base + 400) * MB)
        assert future.result(timeout=60) == 3 and future.state == SUCCESS
        assert ex.store.get(future.id).abort_by is None


def test_one_allocation_past_the_hard_limit_fails_at_once_in_its_worker(start_method, store_path):
    """A single allocation holds the GIL: no look can happen; the address-space cap stops it instead."""
    with pool(store_path, start_method) as ex:
        future = ex.apply_async(tasks.GrowAtOnce, (4000,), memory_limit="100MiB")
        with pytest.raises(MemoryLimitExceeded, match="address-space cap"):
            future.result(timeout=60)
        assert ex.submit(tasks.add, 2, 2).result(timeout=30) == 4


def test_a_worker_that_grew_past_max_memory_per_child_is_replaced_before_its_next_task(start_method, store_path):
    with pool(store_path, start_method, max_workers=1) as ex:
        limit = baseline(ex) + 150
    with pool(store_path, start_method, max_workers=1, max_memory_per_child=f"{limit}MiB") as ex:
        small = ex.submit(tasks.hoard, 10).result(timeout=30)
        assert ex.submit(tasks.pid_after).result(timeout=30) == small  # under the limit: kept
        big = ex.submit(tasks.hoard, 200)
        after = [ex.submit(tasks.pid_after, 0.001) for _ in range(5)]  # some are sent ahead to the grown worker
        assert big.result(timeout=30) == small
        pids = {f.result(timeout=30) for f in after}
        assert small not in pids and len(pids) == 1  # every one ran, on the new worker
        assert all(f.state == SUCCESS for f in after)


def test_bad_limits_are_one_line_errors_at_submit(executor, store_path):
    with pytest.raises(ValueError, match=r"^memory_limit must be a number of bytes or a size such as '512MiB'"):
        executor.apply_async(tasks.add, (1, 2), memory_limit="lots")
    with pytest.raises(ValueError, match=r"^soft_memory_limit must be more than 0 bytes"):
        executor.apply_async(tasks.add, (1, 2), soft_memory_limit=0)
    with pytest.raises(ValueError, match=r"tests\.tasks\.BadLimit\.memory_limit must be"):
        executor.submit(tasks.BadLimit)
    with pytest.raises(ValueError, match="max_memory_per_child must be"):
        Executor(store=store_path, max_memory_per_child="1 elephant")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_the_watch_looks_only_while_a_limited_task_runs(store_path):
    with pool(store_path, "fork", max_workers=1) as ex:
        ex.submit(tasks.add, 1, 1).result(timeout=30)
        assert "localabort-memory" not in ex.submit(tasks.thread_names).result(timeout=30)  # no limit, no thread
        ex.apply_async(tasks.add, (1, 1), memory_limit="1GiB").result(timeout=30)
        assert "localabort-memory" in ex.submit(tasks.thread_names).result(timeout=30)
