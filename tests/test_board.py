"""The dashboard's reads and asks (``_board``), on both databases: counts, batches, keyset pages, one task."""

from __future__ import annotations

import pickle
import time

import pytest
import sqlalchemy as sa

from localabort import ABORTED, FAILURE, PENDING, STARTED, SUCCESS
from localabort._board import RATE_WINDOW, Board
from localabort._schema import executors, task_row

pytestmark = pytest.mark.timeout(60)


def row(task_id, state=SUCCESS, executor="e1", at=1.0, **extra):
    values = dict(name="tests.Job", executor_id=executor, state=state, submitted_at=at)
    values.update(extra)
    return task_row(task_id, **values)


class Boom:
    """A pickle that, unpickled, leaves a file: the proof that a reader unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pages_go_newest_first_without_gaps_or_repeats(store):
    # 120 tasks, some submitted at the very same time: the cursor's tie-break is the id.
    store.write([row(f"t{i:03d}", at=float(i // 4)) for i in range(120)])
    board = Board(store)
    seen, before = [], None
    for expected in (50, 50, 20):
        snap = board.snapshot(before=before)
        assert len(snap["tasks"]) == expected
        seen += [t["id"] for t in snap["tasks"]]
        before = snap["next"]
    assert before is None
    assert seen == sorted(seen, key=lambda i: (int(i[1:]) // 4, i), reverse=True) and len(set(seen)) == 120
    assert board.snapshot(limit=60)["next"] is not None
    assert board.snapshot(limit=120)["next"] is None  # a last page that is full has no next, no empty page after


def test_filters_apply_to_the_page_and_the_running_bars(store):
    store.write([
        row("a", STARTED, started_at=2.0, progress_done=3.0, progress_total=10.0),
        row("b", STARTED, executor="e2", name="tests.Other", started_at=2.0),
        row("c", FAILURE, error="ValueError: x"), row("d", PENDING),
    ])  # fmt: skip
    board = Board(store)
    snap = board.snapshot()
    assert snap["counts"] == {STARTED: 2, FAILURE: 1, PENDING: 1} and snap["running_total"] == 2
    assert {t["id"] for t in snap["running"]} == {"a", "b"}
    (a,) = [t for t in snap["running"] if t["id"] == "a"]
    assert a["progress"] == [3, 10] and a["abort_requested"] is False
    assert [t["id"] for t in board.snapshot(state=FAILURE)["tasks"]] == ["c"]
    assert board.snapshot(state=FAILURE)["tasks"][0]["error"] == "ValueError: x"
    assert {t["id"] for t in board.snapshot(name="other")["running"]} == {"b"}  # a part of the name, in any case
    assert board.snapshot(name="other")["running_total"] == 1 and board.snapshot(executor="e1")["running_total"] == 1
    assert {t["id"] for t in board.snapshot(executor="e1")["tasks"]} == {"a", "c", "d"}
    with pytest.raises(ValueError, match="no state 'DONE'; the states are ABORTED, "):
        board.snapshot(state="DONE")


def test_batches_are_executors_with_their_unfinished_tasks_first(store, monkeypatch):
    for executor_id in ("busy", "old", "newer"):
        store.register_executor(executor_id)
        time.sleep(0.01)  # started in this order
    store.close_executor("old")
    store.write([row("a", STARTED, executor="busy"), row("b", PENDING, executor="busy"), row("c", executor="old")])
    snap = Board(store).snapshot()
    batches = snap["batches"]
    assert [b["id"] for b in batches] == ["busy", "newer", "old"] and snap["batches_total"] == 3
    monkeypatch.setattr("localabort._board.BATCHES", 2)
    assert [b["id"] for b in Board(store).snapshot()["batches"]] == ["busy", "newer"]
    assert batches[0]["unfinished"] == {STARTED: 1, PENDING: 1} and batches[0]["closed_at"] is None
    assert batches[2]["unfinished"] == {} and batches[2]["closed_at"] is not None


def test_the_task_stream_is_one_batchs_last_minutes_and_its_rate_counts_each_second(store):
    store.register_executor("e1")
    store.register_executor("e2")
    now = time.time()
    with store._begin() as conn:  # they began a minute ago
        conn.execute(executors.update().values(started_at=now - 60))
    store.write([
        row("ran", SUCCESS, started_at=now - 10, finished_at=now - 5, worker_pid=11, cpu_seconds=1.0),
        row("failed", FAILURE, started_at=now - 4, finished_at=now - 3.5, worker_pid=12, cpu_seconds=0.1),
        row("runs", STARTED, started_at=now - 2, worker_pid=11),
        row("long_ago", SUCCESS, started_at=now - 600, finished_at=now - 500, worker_pid=11),
        row("unrun", ABORTED, finished_at=now - 1),  # ended before it started: no bar
        row("other", SUCCESS, executor="e2", started_at=now - 3, finished_at=now - 2, worker_pid=13),
    ])  # fmt: skip
    board = Board(store)
    stream = board.snapshot(executor="e1")["stream"]
    assert stream["executor"] == "e1" and stream["since"] == now - 60  # since it began: under STREAM_WINDOW ago
    bars = {bar[0]: bar for bar in stream["tasks"]}
    assert set(bars) == {"ran", "failed", "runs"}
    assert bars["runs"][1:] == [STARTED, now - 2, None, 11] and bars["failed"][4] == 12
    assert board.snapshot(executor="e2")["stream"]["tasks"] == [["other", SUCCESS, now - 3, now - 2, 13]]
    assert board.snapshot(executor="nobody")["stream"] is None
    rates = {b["id"]: b["rate"] for b in board.snapshot()["batches"]}
    assert len(rates["e1"]) == RATE_WINDOW and sum(rates["e1"]) == 3 and sum(rates["e2"]) == 1
    store.close_executor("e2")
    ended = board.snapshot(executor="e2")["stream"]
    assert ended["until"] <= time.time() and ended["tasks"] == [["other", SUCCESS, now - 3, now - 2, 13]]


def test_a_task_in_full_is_its_text_and_never_its_pickles(store, tmp_path):
    trap = tmp_path / "unpickled"
    blob = pickle.dumps(Boom(str(trap)))
    store.write([row("t1", FAILURE, args_repr="1, n=2", result=blob, traceback="Traceback ...", error="E: x",
                     retries=2)])  # fmt: skip
    board = Board(store)
    task = board.task("t1")
    assert (task["args_repr"], task["traceback"], task["error"], task["retries"]) == (
        "1, n=2",
        "Traceback ...",
        "E: x",
        2,
    )
    assert "result" not in task
    board.snapshot()
    assert not trap.exists()
    assert board.task("nope") is None


def test_aborts_asked_of_one_task_or_of_one_batch(store):
    store.write([row("a", STARTED), row("b", PENDING), row("c", STARTED, executor="e2"), row("d", SUCCESS)])
    board = Board(store)
    assert board.abort("a", 5.0, "the page") == {"id": "a", "met": STARTED}
    record = store.get("a")
    assert record.abort_requested and record.abort_by == "the page" and record.terminate_at is not None
    assert board.abort("d", None, "the page") == {"id": "d", "met": None}  # finished: nothing asked
    assert board.abort("nope", None, "the page") is None and store.get("nope") is None  # no standing abort made
    assert sorted(board.abort_batch("e1", None, "the page")) == ["b"]  # a was asked already
    assert not store.get("c").abort_requested  # another batch's task
    assert store.get("b").abort_by == "the page"
    assert ABORTED not in board.snapshot()["counts"]  # asking is not ending: the executor ends them


def test_a_count_that_takes_long_is_reused_for_ten_times_its_cost_and_a_cheap_one_never():
    from localabort._board import CHEAP, RECOUNT, _Costly

    made = []

    def slow(conn):
        time.sleep(CHEAP * 1.5)
        made.append(1)
        return len(made)

    engine = sa.create_engine("sqlite://")
    costly = _Costly(slow)
    first, at = costly.get(engine)
    assert costly.get(engine) == (first, at) == (1, at)  # within RECOUNT times its cost: the same count
    time.sleep(CHEAP * 3 * RECOUNT)  # well past ten times its cost
    assert costly.get(engine)[0] == 2
    cheap = _Costly(lambda conn: time.monotonic())
    assert cheap.get(engine)[0] != cheap.get(engine)[0]
    engine.dispose()  # an in-memory database holds no descriptor the leak check would see: closed here
