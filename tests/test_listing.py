"""``_listing``: a whole JSON listing in pieces, and ``localabort status`` on an SQLite store without SQLAlchemy.

The listings themselves are tested on both databases in ``test_store``.
Real store files throughout; the CLI runs in a fresh interpreter where the
point is what it imports.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from localabort import FAILURE, PENDING, STARTED, SUCCESS, StoreError, _listing
from localabort._schema import executors
from localabort._store import Store

from .test_store import row

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    yield store
    store.dispose()


def filled(store, count=60):
    """Tasks of every kind a listing meets: ties in time, no time at all, progress, text outside ASCII."""
    states = [SUCCESS, STARTED, PENDING, FAILURE]
    rows = [row(f"t{i:03}", states[i % 4], submitted_at=float(i // 3), progress_done=float(i), progress_total=100.0,
                name=f"tests.Job{i % 5}") for i in range(count)]  # fmt: skip
    rows += [row("untimed", PENDING, submitted_at=None), row("café", STARTED, submitted_at=7.5, name="tests.Zoë\u202e")]
    store.write(rows)
    store.request_abort("t001", by="me")
    return store


def ageless(listed):
    """The objects of a JSON listing, less ``age_seconds`` (which depends on when it was listed), newest first;
    tasks submitted at the same time in the order of their ids (a listing gives them in no order of its own)."""
    found = [{k: v for k, v in json.loads(text).items() if k != "age_seconds"} for text in listed]
    times = [o["submitted_at"] for o in found]
    assert times == sorted(times, key=lambda at: -(at if at is not None else -1.0))  # newest first, untimed last
    return sorted(found, key=lambda o: (-(o["submitted_at"] if o["submitted_at"] is not None else -1.0), o["id"]))


@pytest.mark.parametrize("pieces", [1, 2, 4, 7])
def test_a_whole_json_listing_in_pieces_is_the_listing_in_one(store, monkeypatch, pieces):
    """Cut where tasks share a time, with tasks of no time, and text to escape: the same objects, in order."""
    filled(store)
    monkeypatch.setattr(_listing, "PIECES", pieces)
    monkeypatch.setattr(_listing, "PIECE_ROWS", 5)
    found = list(store.json_pieces())
    assert len(found) == pieces and all(piece.isascii() for piece in found)
    whole = json.loads("[" + ",\n".join(found) + "]")
    assert ageless(",\n".join(found).split(",\n")) == ageless(store.tasks_json())
    assert [o["id"] for o in whole][-1] == "untimed"  # no time: the oldest
    nows = [o["age_seconds"] + o["submitted_at"] for o in whole if o["submitted_at"] is not None]
    assert max(nows) - min(nows) < 0.002  # one "now" for every piece (an age is given to the millisecond)
    chosen = list(store.json_pieces(states=iter([STARTED]), name="Job1"))  # an iterator, read by every piece
    assert ageless(",\n".join(chosen).split(",\n")) == ageless(store.tasks_json(states=[STARTED], name="Job1")) != []


def test_a_small_listing_is_one_piece(store):
    filled(store)
    assert len(list(store.json_pieces())) == 1
    assert ageless(store.json_pieces(limit=3)) == ageless(store.tasks_json(limit=3))


def test_status_recovers_a_dead_executors_tasks_first(store):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.write([row("orphan", STARTED, executor_id="dead-ex")])
    with store._begin() as conn:
        conn.execute(executors.insert().values(id="dead-ex", hostname=socket.gethostname(), pid=int(gone.stdout),
                                               process_start="1", started_at=1.0))  # fmt: skip
    listed = subprocess.run([sys.executable, "-m", "localabort", "status", "--json", store.path],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert [o["state"] for o in json.loads(listed.stdout)] == [FAILURE]
    assert store.get("orphan").state == FAILURE


def test_status_on_an_sqlite_store_imports_no_sqlalchemy(store):
    filled(store)
    script = (
        "import sys; from localabort.cli import main; "
        f"code = main(['status', {store.path!r}]) + main(['status', '--json', {store.path!r}]); "
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table, listing = done.stdout.split("\n[\n", 1)
    assert "t059" in table and "50 of 62 shown" in table
    assert len(json.loads("[\n" + listing)) == 62


def test_a_failed_read_names_the_store(store):
    filled(store)
    dropping = sqlite3.connect(store.path)
    dropping.execute("DROP TABLE localabort_tasks")
    dropping.close()
    with pytest.raises(StoreError, match=rf"^{store.path}: cannot read the store \(no such table: localabort_tasks\)"):
        store.tasks()
    with pytest.raises(StoreError, match="cannot read the store"):
        list(store.json_pieces())
    assert os.path.exists(store.path)
