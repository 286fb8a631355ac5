"""``_reader.Reader``: an SQLite store read with ``sqlite3`` alone gives the answers ``Store`` gives, or none.

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

from localabort import FAILURE, PENDING, STARTED, SUCCESS, StoreError, _reader
from localabort._reader import Reader
from localabort._schema import executors
from localabort._store import Store

from .test_store import row

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    yield store
    store.dispose()


@pytest.fixture
def reader(store):
    reader = Reader.open(store.path)
    assert reader is not None
    yield reader
    reader.close()


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


def test_a_reader_answers_as_the_store_does(store, reader):
    filled(store)
    assert reader.tasks(outcomes=False) == store.tasks(outcomes=False)
    assert reader.tasks() == store.tasks()
    assert reader.tasks(["t001", "t002", "zz"], states=[SUCCESS, STARTED], limit=1) == store.tasks(
        ["t001", "t002", "zz"], states=[SUCCESS, STARTED], limit=1
    )
    assert reader.tasks(name="Zoë") == store.tasks(name="Zoë") != []
    assert [r.id for r in reader.tasks(name="_")] == []  # LIKE's wildcards are escaped
    assert reader.counts() == store.counts() and reader.counts(finished=False) == store.counts(finished=False)
    assert reader.get("t001") == store.get("t001") and reader.get("t001").abort_requested
    assert reader.get("missing") is None
    assert reader.match("t00") == store.match("t00") and reader.match("é") == ["café"]
    assert ageless(reader.tasks_json()) == ageless(store.tasks_json())


@pytest.mark.parametrize("pieces", [1, 2, 4, 7])
def test_a_whole_json_listing_in_pieces_is_the_listing_in_one(store, reader, monkeypatch, pieces):
    """Cut where tasks share a time, with tasks of no time, and text to escape: the same objects, in order."""
    filled(store)
    monkeypatch.setattr(_reader, "PIECES", pieces)
    monkeypatch.setattr(_reader, "PIECE_ROWS", 5)
    found = list(reader.json_pieces())
    assert len(found) == pieces and all(piece.isascii() for piece in found)
    whole = json.loads("[" + ",\n".join(found) + "]")
    assert ageless(",\n".join(found).split(",\n")) == ageless(store.tasks_json())
    assert [o["id"] for o in whole][-1] == "untimed"  # no time: the oldest
    nows = [o["age_seconds"] + o["submitted_at"] for o in whole if o["submitted_at"] is not None]
    assert max(nows) - min(nows) < 0.002  # one "now" for every piece (an age is given to the millisecond)
    chosen = list(reader.json_pieces(states=[STARTED], name="Job1"))
    assert ageless(",\n".join(chosen).split(",\n")) == ageless(store.tasks_json(states=[STARTED], name="Job1")) != []


def test_a_small_listing_is_one_piece(store, reader):
    filled(store)
    assert len(list(reader.json_pieces())) == 1
    assert ageless(reader.json_pieces(limit=3)) == ageless(store.tasks_json(limit=3))


def test_only_a_current_store_with_nothing_to_recover_is_read(store, tmp_path):
    assert Reader.open(f"sqlite:///{store.path}") is None  # a URL: Store's to open
    assert Reader.open(str(tmp_path / "missing.sqlite")) is None
    assert Reader.open(str(tmp_path)) is None  # a folder
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    assert Reader.open(str(foreign)) is None
    older = sqlite3.connect(store.path)
    older.execute("UPDATE localabort_meta SET value = '6' WHERE name = 'schema'")
    older.commit()
    assert Reader.open(store.path) is None
    older.execute("UPDATE localabort_meta SET value = '7' WHERE name = 'schema'")
    older.commit()
    older.close()
    current = Reader.open(store.path)
    assert current is not None
    current.close()


def test_a_dead_executor_leaves_the_status_to_the_store_which_recovers_it(store):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.write([row("orphan", STARTED, executor_id="dead-ex")])
    with store._begin() as conn:
        conn.execute(executors.insert().values(id="dead-ex", hostname=socket.gethostname(), pid=int(gone.stdout),
                                               process_start="1", started_at=1.0))  # fmt: skip
    assert Reader.open(store.path) is None
    listed = subprocess.run([sys.executable, "-m", "localabort", "status", "--json", store.path],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert [o["state"] for o in json.loads(listed.stdout)] == [FAILURE]
    reader = Reader.open(store.path)
    assert reader is not None and reader.get("orphan").state == FAILURE
    reader.close()


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


def test_a_failed_read_names_the_store(store, reader):
    filled(store)
    dropping = sqlite3.connect(store.path)
    dropping.execute("DROP TABLE localabort_tasks")
    dropping.close()
    with pytest.raises(StoreError, match=rf"^{store.path}: cannot read the store \(no such table: localabort_tasks\)"):
        reader.tasks()
    with pytest.raises(StoreError, match="cannot read the store"):
        list(reader.json_pieces())
    assert os.path.exists(store.path)
