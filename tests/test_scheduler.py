"""The scheduler's rows for the store: a write stays short, and vouches only for the jobs it or an earlier one wrote.

A real store; no workers (the scheduler alone decides which rows a write carries).
"""

from __future__ import annotations

import collections
import multiprocessing
import time
import types

import pytest

from localabort._jobs import Job
from localabort._scheduler import AHEAD_BYTES, BACKLOG_ROWS, Scheduler
from localabort._store import Store
from localabort._words import AbortWords, allocate

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def scheduler(store_path):
    scheduler = Scheduler(Store.open(store_path, create=True), "ex-1")
    yield scheduler
    scheduler.close_wake()


def submit(scheduler, count, start=0):
    jobs = [Job(f"t{i}", scheduler.next_seq(), "tests.tasks.add", None, scheduler) for i in range(start, start + count)]
    for job in jobs:
        scheduler.enqueue(job)
    return jobs


def test_a_write_carries_the_backlog_a_hundred_rows_at_a_time_in_order(scheduler):
    jobs = submit(scheduler, 2 * BACKLOG_ROWS + 50)
    rows, _, claims, written_up_to = scheduler.take_rows()
    assert [row["id"] for row in rows] == [job.id for job in jobs[:BACKLOG_ROWS]] and claims == []
    assert written_up_to == jobs[BACKLOG_ROWS].submitted_at  # not past the first job still unwritten
    assert scheduler.take_rows(first=True)[0] == []  # an idle worker waits for a claim: no backlog with it
    rows, *_ = scheduler.take_rows()
    assert [row["id"] for row in rows] == [job.id for job in jobs[BACKLOG_ROWS : 2 * BACKLOG_ROWS]]
    scheduler.queue.clear()  # none queued (followers, jobs ended while queued): every row goes at once
    rows, _, _, written_up_to = scheduler.take_rows()
    assert [row["id"] for row in rows] == [job.id for job in jobs[2 * BACKLOG_ROWS :]]
    assert jobs[-1].submitted_at <= written_up_to <= time.time()
    assert scheduler.take_rows()[0] == []


def test_a_claimed_job_is_written_with_its_claim_wherever_it_is_in_the_backlog(scheduler):
    follower = Job("follower", scheduler.next_seq(), "tests.tasks.add", None, scheduler)
    follower.follows = "the-holder"  # not queued: the claim goes to the job after it in the backlog
    scheduler.enqueue(follower)
    jobs = submit(scheduler, BACKLOG_ROWS + 20)
    scheduler.claim_ahead = 1
    rows, _, claims, written_up_to = scheduler.take_rows(first=True)
    assert claims == [jobs[0]] and [(row["id"], row["state"]) for row in rows] == [("t0", "RECEIVED")]
    assert written_up_to == follower.submitted_at  # the follower's row is still owed
    scheduler.claim_ahead = 0
    rows, *_ = scheduler.take_rows()
    expected = ["follower", *(job.id for job in jobs[1:BACKLOG_ROWS])]  # t0 is not written again
    assert [row["id"] for row in rows] == expected


def test_a_job_a_user_thread_ended_and_wrote_is_not_written_again(scheduler):
    jobs = submit(scheduler, 3)
    assert jobs[1].future.cancel()  # written by the cancelling thread (``_settle``)
    rows, *_ = scheduler.take_rows()
    assert [row["id"] for row in rows] == ["t0", "t2"]


def test_jobs_that_crossed_on_their_way_in_are_vouched_for_by_the_earliest(scheduler):
    """Made in one thread, queued after another thread's job made later: the write vouches for neither early."""
    early = Job("early", scheduler.next_seq(), "tests.tasks.add", None, scheduler)
    submit(scheduler, BACKLOG_ROWS)
    later = submit(scheduler, 1, start=BACKLOG_ROWS)[0]
    scheduler.enqueue(early)
    rows, _, _, written_up_to = scheduler.take_rows()
    assert len(rows) == BACKLOG_ROWS and written_up_to == early.submitted_at < later.submitted_at
    scheduler.queue.clear()
    scheduler.take_rows()  # the backlog written: in order again
    assert scheduler._early == [] and scheduler.take_rows()[0] == []
    last = submit(scheduler, BACKLOG_ROWS + 1, start=BACKLOG_ROWS + 1)
    assert scheduler.take_rows()[3] == last[BACKLOG_ROWS].submitted_at


def test_a_job_whose_row_is_stored_is_claimed_by_its_id_alone(scheduler):
    """Its PENDING row written, a claim writes no row again: the store's UPDATE moves it, and it is RECEIVED."""
    jobs = submit(scheduler, 3)
    rows, *_ = scheduler.take_rows()  # nothing to claim yet (no workers): the rows, PENDING
    scheduler.store.sync("ex-1", rows, [], claims=[], flushed_at=time.time())
    scheduler.claim_ahead = 2
    rows, _, claims, _ = scheduler.take_rows()
    assert rows == [] and claims == jobs[:2]
    assert scheduler.store.sync("ex-1", rows, [], claims=[(j.id, j.name, j.key) for j in claims]) == ([], {})
    scheduler.claimed(claims)  # as the manager takes the answer
    assert [scheduler.store.get(job.id).state for job in jobs] == ["RECEIVED", "RECEIVED", "PENDING"]
    jobs[2].retries = 1  # an attempt again: its row changed since, and is written with its claim
    scheduler.claim_ahead = 3
    rows, _, claims, _ = scheduler.take_rows()
    assert claims == [jobs[2]] and [(row["id"], row["state"]) for row in rows] == [("t2", "RECEIVED")]


def busy_slot(index):
    """A worker slot as ``dispatch`` sees one that runs a job (no process: the scheduler alone decides)."""
    words = AbortWords(allocate(multiprocessing.get_context("fork"), 1), 0, None)
    return types.SimpleNamespace(
        index=index, job=types.SimpleNamespace(started_at=None), ahead=collections.deque(), reserved=False,
        gone=False, taken_back=set(), calls=0, words=words, ready=True,
    )  # fmt: skip


def test_calls_held_ahead_stay_within_their_bytes_after_a_burst_of_larger_ones(scheduler):
    """After tiny calls a worker may hold 127 ahead: larger ones are counted call by call, not by the mean
    of those before (which would have sent 127 calls of 60 KB, and blocked the manager on the pipe)."""
    slot = busy_slot(0)
    scheduler.slots[:] = [slot]
    tiny = submit(scheduler, 50)
    for job in tiny:
        job.blob = b"t" * 100
    scheduler.timed(1e-6)  # trivial jobs: as many ahead as a slot holds
    scheduler.claimed(tiny)
    sent = scheduler.dispatch()
    assert len(sent) == 50
    slot.ahead.clear()  # its worker went through them
    larger = submit(scheduler, 50, start=50)
    for job in larger:
        job.blob = b"L" * 20_000
    scheduler.claimed(larger)
    sent = scheduler.dispatch()
    assert sum(len(call.blob) for _, call in sent) <= AHEAD_BYTES and len(sent) == AHEAD_BYTES // 20_000
    slot.ahead.clear()
    huge = submit(scheduler, 1, start=100)
    huge[0].blob = b"H" * (AHEAD_BYTES + 1)
    scheduler.queue.clear()  # the rest of the larger ones ended meanwhile
    scheduler.queue.append(huge[0])
    scheduler.claimed(huge)
    assert scheduler.dispatch() == []  # never ahead: only to an idle worker


def test_abort_all_takes_back_the_jobs_held_ahead_before_it_aborts_the_running_ones(scheduler):
    """A running job's abort frees its worker, which goes on to the job it holds ahead: taken back first, that
    one never starts. (The other order let a job sent ahead start, and report progress, under abort_all.)"""
    order = []

    class Words(AbortWords):
        def abort(self, word, seq):
            order.append(("abort", seq))
            super().abort(word, seq)

        def recall(self, word, seq):
            order.append(("recall", seq))
            return super().recall(word, seq)

    slot = busy_slot(0)
    slot.words = Words(allocate(multiprocessing.get_context("fork"), 1), 0, None)
    slot.job, slot.pid = None, None  # idle: the first job runs, the others go ahead of it
    jobs = submit(scheduler, 4)  # queued: no worker yet
    scheduler.slots[:] = [slot]
    scheduler.timed(1e-6)
    for job in jobs:
        job.blob = b"x"
    scheduler.claimed(jobs)
    scheduler.dispatch()
    assert slot.job is jobs[0] and list(slot.ahead) == jobs[1:]
    order.clear()
    assert scheduler.abort_all() == (4, 1)
    running = order.index(("abort", jobs[0].seq))
    assert all(order.index(("recall", job.seq)) < running for job in jobs[1:])
