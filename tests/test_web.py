"""The dashboard's server (``_web``) over real HTTP, its command, and its page in a real browser.

The browser tests drive Debian's Chromium with Playwright: ``.ci/run``
installs it; elsewhere they say they were skipped, naming what to install.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import localabort
from localabort import ABORTED, STARTED, Executor
from localabort._store import Store
from localabort._web import Dashboard

from . import tasks
from .conftest import ROOT, pool, wait_for

pytestmark = pytest.mark.timeout(90)


def request(url, *, method="GET", headers=None, body=None):
    """``(status, body as text)`` of one HTTP request, refusals included."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def base(board):
    return board.url.split("?")[0]


def new_store(path):
    Executor(max_workers=1, store=str(path)).shutdown()  # an Executor creates a store
    return Store.open(str(path))


@pytest.fixture
def served(tmp_path):
    board = Dashboard(new_store(tmp_path / "s.sqlite")).start()
    yield board
    board.stop()


def refused_port(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# -- the token, the host, the site ---------------------------------------------


def test_every_request_but_the_static_files_needs_the_token(served):
    root, token = base(served), served.token
    for path in ("", "api/snapshot", "api/events", "api/tasks/x"):
        status, text = request(root + path)
        assert status == 403 and "needs its token: open the URL that started it printed" in text, path
        assert request(f"{root}{path}?token=wrong{token}")[0] == 403, path
    assert request(served.url)[0] == 200
    assert request(f"{root}api/snapshot", headers={"X-Localabort-Token": token})[0] == 200
    assert request(f"{root}api/tasks/x?token={token}") == (404, '{"error":"no such task in this store"}')
    assert request(root + "static/dashboard.js")[0] == 200  # no data in it
    assert request(root + "static/../_web.py")[0] == 404


def test_an_action_takes_the_token_from_its_header_only_and_never_from_another_site(served, tmp_path):
    store = served.board.store
    store.write([tasks_row("t1")])
    url, token = base(served) + "api/tasks/t1/abort", served.token
    assert request(f"{url}?token={token}", method="POST", body={})[0] == 403  # a link or form cannot act
    headers = {"X-Localabort-Token": token}
    for site in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        status, text = request(url, method="POST", headers={**headers, **site}, body={})
        assert status == 403 and "refused" in text, site
    assert not store.get("t1").abort_requested
    same = {**headers, "Sec-Fetch-Site": "same-origin"}
    for wrong in (-1, True, "5", float("nan"), float("inf")):
        status, text = request(url, method="POST", headers=same, body={"terminate_after": wrong})
        assert status == 400 and "terminate_after must be a number of seconds, 0 or more" in text, wrong
    assert request(url, method="POST", headers=same, body=[])[0] == 400
    status, text = request(url, method="POST", headers=headers, body={"terminate_after": 5})
    assert (status, json.loads(text)) == (200, {"id": "t1", "met": STARTED})
    assert "localabort dashboard" in store.get("t1").abort_by and store.get("t1").terminate_at is not None


def test_only_requests_that_name_this_machine_are_answered(served):
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) is not answered."""
    status, text = request(served.url, headers={"Host": f"evil.example:{served.port}"})
    assert status == 403 and "answers only for 127.0.0.1" in text
    assert request(served.url, headers={"Host": f"localhost:{served.port}"})[0] == 200


def test_read_only_serves_no_actions(tmp_path):
    board = Dashboard(new_store(tmp_path / "s.sqlite"), read_only=True).start()
    try:
        board.board.store.write([tasks_row("t1")])
        status, _ = request(base(board) + "api/tasks/t1/abort", method="POST",
                            headers={"X-Localabort-Token": board.token}, body={})  # fmt: skip
        assert status == 405 and not board.board.store.get("t1").abort_requested
        assert json.loads(request(f"{base(board)}api/snapshot?token={board.token}")[1])["read_only"] is True
    finally:
        board.stop()


def tasks_row(task_id):
    from localabort._schema import task_row

    return task_row(task_id, name="tests.Job", executor_id="e1", state=STARTED, submitted_at=time.time())


# -- the stream, and stopping --------------------------------------------------


def test_the_stream_sends_snapshots_until_the_server_stops_and_then_nothing_is_left(served):
    stream = urllib.request.urlopen(f"{base(served)}api/events?token={served.token}&limit=5", timeout=20)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    events = []
    while len(events) < 2:
        line = stream.readline().decode()
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    assert events[1]["now"] > events[0]["now"] and events[0]["counts"] == {}
    stopping = threading.Thread(target=served.stop)
    stopping.start()
    assert stream.read() is not None  # the open stream ends: no stop waits on a page left open
    stream.close()
    stopping.join(15)
    assert not stopping.is_alive()
    assert refused_port(served.port)
    assert not [t for t in threading.enumerate() if t.name.startswith("localabort-dashboard")]


def test_a_store_that_cannot_be_read_is_said_on_the_stream_which_goes_on(served):
    with contextlib.closing(sqlite3.connect(served.board.store.path)) as conn, conn:
        conn.execute("DROP TABLE localabort_executors")  # broken under the server's feet
    with urllib.request.urlopen(f"{base(served)}api/events?token={served.token}", timeout=20) as stream:
        said = [stream.readline().decode() for _ in range(6)]
    assert said[0] == said[3] == "event: problem\n", said
    assert (
        said[1]
        == 'data: {"error": "OperationalError: (sqlite3.OperationalError) no such table: localabort_executors"}\n'
    )


def test_an_executor_serves_its_batch_prints_the_url_once_and_stops_with_it(tmp_path, capfd):
    ex = Executor(max_workers=1, store=str(tmp_path / "s.sqlite"), dashboard=True)  # no with block
    fut = ex.submit(tasks.Crunch, 3)
    assert fut.result(timeout=30) == [0, 1, 4]
    (line,) = [line for line in capfd.readouterr().err.splitlines() if "dashboard" in line]
    url = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=\S+&executor=(\w+)", line)
    assert url and url.group(2) == ex.id, line  # the page opens on this batch
    snap = json.loads(request(url.group().replace("/?", "/api/snapshot?"))[1])
    assert snap["counts"] == {"SUCCESS": 1} and snap["batches"][0]["id"] == ex.id
    ex.shutdown()
    assert refused_port(int(url.group(1)))
    assert not [t for t in threading.enumerate() if t.name.startswith("localabort-dashboard")]


# -- the command ---------------------------------------------------------------


def serve(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "localabort", "serve", *args], stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, **kwargs)  # fmt: skip


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c_with_a_page_open(tmp_path):
    path = str(tmp_path / "s.sqlite")
    new_store(path)
    server = serve(path, "--port", "0", "--read-only")
    try:
        line = server.stderr.readline()
        assert re.fullmatch(rf"localabort: read-only dashboard of {re.escape(path)} at http://127\.0\.0\.1:\d+/\?token="
                            r"\S+  \(Ctrl-C to stop\)\n", line), line  # fmt: skip
        url = re.search(r"http://\S+", line).group()
        assert request(url)[0] == 200
        with urllib.request.urlopen(url.replace("/?", "/api/events?"), timeout=20) as stream:
            assert stream.readline().startswith(b"data: ")
            server.send_signal(signal.SIGINT)
        assert server.wait(15) == 130  # as for any command Ctrl-C stops
        assert server.stderr.read() == ""  # no traceback
    finally:
        server.kill()
        server.wait()
        server.stderr.close()


def test_serve_errors_are_one_line(tmp_path):
    path = str(tmp_path / "s.sqlite")
    new_store(path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = serve(path, "--port", str(port))
        err = out.communicate(timeout=30)[1]
    assert out.returncode == 2
    assert err == f"localabort: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use; pass another " \
                  "--port, or --port 0 for a free one\n"  # fmt: skip
    out = serve(str(tmp_path / "typo.sqlite"))
    assert out.communicate(timeout=30)[1] == f"localabort: {tmp_path}/typo.sqlite: no such store (check the path; " \
                                             "an Executor creates one)\n"  # fmt: skip
    # Without the web extra: said in one line, with the command that installs it.
    code = "import sys; sys.modules['uvicorn'] = None; import localabort.cli as c; sys.exit(c.main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "serve", path], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert (out.returncode, out.stderr) == (
        2, 'localabort: the dashboard needs uvicorn, which the web extra installs: pip install "localabort[web]"\n'
    )  # fmt: skip


# -- the page, in a real browser ------------------------------------------------

CHROMIUM = os.environ.get("LOCALABORT_TEST_CHROMIUM") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; or set LOCALABORT_TEST_CHROMIUM)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


#: As root (CI), Chromium needs --no-sandbox; the rest keep it off a network this machine does not have.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    yield page
    context.close()
    assert not errors  # no script error on the page


def dashboard_url(capfd):
    err = capfd.readouterr().err
    return re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", err).group()


def test_the_page_follows_a_running_batch_and_aborts_a_task_with_a_click(tmp_path, capfd, page):
    with pool(str(tmp_path / "s.sqlite"), "fork", 2, dashboard=True) as ex:
        one, two = ex.submit(tasks.Steps, 3000), ex.submit(tasks.Steps, 3000)
        page.goto(dashboard_url(capfd))
        bar = page.locator(f'.bar[data-id="{one.id}"] progress')
        bar.wait_for()
        first = float(bar.get_attribute("value"))
        wait_for(lambda: float(bar.get_attribute("value")) > first, what="the bar to move")
        assert page.locator("#live").get_attribute("data-live") == "live"
        page.locator(f'tr[data-id="{one.id}"]').click()  # the task's detail
        page.locator(f'#detail[data-id="{one.id}"]').wait_for()
        assert page.locator('#d-fields dd[data-field="args"]').text_content() == "3000"
        page.locator("#d-abort").click()
        page.locator(f'tr[data-id="{one.id}"][data-state="ABORTED"]').wait_for()  # the page, from the store
        record = ex.store.get(one.id)
        assert record.state == ABORTED and record.abort_by.startswith("localabort dashboard (pid ")
        assert one.state == ABORTED and two.state == STARTED
        assert "abort requested (it was STARTED)" in page.locator("#d-said").text_content()
        two.abort()


def test_a_task_that_never_checks_is_killed_after_the_seconds_given_on_the_page(tmp_path, capfd, page):
    with pool(str(tmp_path / "s.sqlite"), "fork", 1, dashboard=True) as ex:
        deaf = ex.submit(tasks.Deaf, 60)
        page.goto(dashboard_url(capfd))
        page.locator(f'.bar[data-id="{deaf.id}"] .label').click()
        page.locator(f'#detail[data-id="{deaf.id}"]').wait_for()
        page.fill("#d-after", "0.5")
        page.locator("#d-terminate").click()
        with pytest.raises(localabort.TaskAborted, match="terminated: still running when the terminate_after"):
            deaf.result(timeout=30)
        page.locator(f'tr[data-id="{deaf.id}"][data-state="ABORTED"]').wait_for()
        assert "its worker is killed if it still runs in 0.5s" in page.locator("#d-said").text_content()


def test_a_whole_batch_is_aborted_only_once_confirmed(tmp_path, capfd, page):
    path = str(tmp_path / "s.sqlite")
    with pool(path, "fork", 1) as other, pool(path, "fork", 1, dashboard=True) as ex:
        mine = [ex.submit(tasks.Steps, 3000) for _ in range(3)]
        theirs = other.submit(tasks.Steps, 3000)
        page.goto(dashboard_url(capfd))
        button = page.locator(f'.batch[data-executor="{ex.id}"] button[data-action="abort-batch"]')
        questions = []

        def answer(dialog):
            questions.append(dialog.message)
            (dialog.dismiss if len(questions) == 1 else dialog.accept)()

        page.on("dialog", answer)
        button.click()
        wait_for(lambda: questions, what="the confirmation")
        assert questions[0].startswith(f"Abort all 3 unfinished tasks of batch {ex.id[-8:]} (")
        assert not any(ex.store.get(f.id).abort_requested for f in mine)  # dismissed: nothing asked
        button.click()
        for f in mine:
            assert f.exception(timeout=30) is not None and f.state == ABORTED
        assert theirs.state == STARTED and not theirs.done()  # another batch on the same store
        theirs.abort()


def test_the_task_panel_follows_the_log_shows_it_inert_and_says_what_the_task_used(tmp_path, capfd, page):
    with pool(str(tmp_path / "s.sqlite"), "fork", 1, dashboard=True) as ex:
        hostile = ex.submit(tasks.hostile_text)
        chatty = ex.submit(tasks.Chatty, 60, 0.1)
        page.goto(dashboard_url(capfd))
        page.locator(f'tr[data-id="{chatty.id}"]').click()
        page.locator(f'#detail[data-id="{chatty.id}"]').wait_for()
        log = page.locator("#d-log")
        wait_for(lambda: "out 1\n" in (log.text_content() or ""), what="the running task's log on the page")
        assert not chatty.done()
        seen = log.text_content()
        wait_for(lambda: len(log.text_content()) > len(seen), what="the log to grow as the task runs")
        assert chatty.result(timeout=60) == 60
        wait_for(lambda: "from a thread" in log.text_content(), what="the whole log once it ended")
        used = page.locator('#d-fields dd[data-field="used"]')
        wait_for(lambda: used.count() and " s CPU, peak memory " in used.text_content(), what="what it used")
        page.locator(f'tr[data-id="{hostile.id}"]').click()
        page.locator(f'#detail[data-id="{hostile.id}"]').wait_for()
        wait_for(lambda: "red" in (log.text_content() or ""), what="the hostile task's log")
        text = log.text_content()
        assert "\x1b" not in text and "\u202e" not in text
        assert "\\u001b[31mred" in text and "\\u202eevil" in text


def old_tasks(path, count):
    """``count`` finished tasks of a batch long gone, written straight into the store at ``path``."""
    new_store(path)
    at = time.time() - 86400
    rows = ((f"old-{i:07d}", "gone", "tests.Job", "SUCCESS", at + i / 1000, at + i / 1000, at + i / 1000 + 0.001, 7)
            for i in range(count))  # fmt: skip
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO localabort_tasks (id, executor_id, name, state, submitted_at, started_at, finished_at, "
            "worker_pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows,
        )  # fmt: skip


@pytest.mark.timeout(300)
def test_the_task_stream_draws_a_batch_live_on_a_store_of_a_million_tasks(tmp_path, capfd, page):
    path = str(tmp_path / "s.sqlite")
    old_tasks(path, 1_000_000)
    with pool(path, "fork", 2, dashboard=True) as ex:
        futures = [ex.submit(tasks.Steps, 10, 0.01) for _ in range(30)] + [ex.submit(tasks.Fail, "boom")]
        page.goto(dashboard_url(capfd))
        page.locator('#stream rect.task[data-state="STARTED"]').first.wait_for()  # live: running bars
        for future in futures[:-1]:
            assert future.result(timeout=60) == 10
        pids = {f.usage["worker_pid"] for f in futures[:-1]}
        done = page.locator('#stream rect.task[data-state="SUCCESS"]')
        wait_for(lambda: done.count() == 30, what="a bar for each task that ended")
        page.locator('#stream rect.task[data-state="FAILURE"]').wait_for()
        lanes = {page.locator("#stream text").nth(i).text_content() for i in range(len(pids))}
        assert lanes == {f"pid {pid}" for pid in pids}  # one lane per worker process
        assert "Task stream: batch " + ex.id[-8:] in page.locator("#stream-title").text_content()
        rate = page.locator(f'.batch[data-executor="{ex.id}"] .rate')
        assert rate.text_content().endswith("/s")
        page.locator(f'#stream rect.task[data-id="{futures[3].id}"]').dispatch_event("click")
        page.locator(f'#detail[data-id="{futures[3].id}"]').wait_for()  # the bar opens its task


def test_text_from_the_store_is_shown_as_text_never_run(tmp_path, page):
    board = Dashboard(new_store(tmp_path / "s.sqlite")).start()
    try:
        hostile = '<img src=x onerror="window.pwned=1">'
        row = tasks_row(hostile)
        row.update(name=hostile, error=hostile)
        board.board.store.write([row])
        page.goto(board.url)
        cell = page.locator("#tasks tbody td.error")
        cell.wait_for()
        assert cell.text_content() == hostile
        assert page.evaluate("window.pwned") is None and page.locator("#tasks img").count() == 0
    finally:
        board.stop()


def test_a_page_without_the_token_shows_why(served, page):
    page.goto(base(served))
    assert "needs its token" in page.text_content("body")
