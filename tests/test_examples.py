"""Every script under examples/ runs, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_batch_runs_and_aborts_some(tmp_path):
    store = tmp_path / "demo.sqlite"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), str(store)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    final = out.stdout.strip().splitlines()[-1]
    assert final.startswith("final states: {'ABORTED': ")
    aborted = int(final.split("'ABORTED': ")[1].split(",")[0])
    succeeded = int(final.split("'SUCCESS': ")[1].rstrip("}"))
    assert aborted >= 6 and aborted + succeeded == 36
    assert "aborted after 0 squares" in out.stdout  # a queued task that never started
    from localabort._store import Store

    records = Store.open(str(store)).tasks()
    assert len(records) == 36 and {r.state for r in records} == {"ABORTED", "SUCCESS"}


def test_demo_batch_resumes_what_finished(tmp_path):
    store = str(tmp_path / "demo.sqlite")
    first = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), store], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    succeeded = int(first.stdout.strip().splitlines()[-1].split("'SUCCESS': ")[1].rstrip("}"))
    again = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), store], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"{succeeded} task(s) finished in an earlier run: not run again"


def test_demo_batch_stops_on_ctrl_c_with_one_line_and_every_task_ended(tmp_path):
    import signal
    import time

    from localabort import StoreError
    from localabort._store import Store

    store = tmp_path / "demo.sqlite"
    batch = subprocess.Popen([sys.executable, str(EXAMPLES / "demo.py"), str(store)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    reader = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and batch.poll() is None:  # under way: some task has finished
            try:
                reader = reader or Store(str(store), create=False)  # opened once: a look must stay cheap
                if any(r.state == "SUCCESS" for r in reader.tasks()):
                    break
            except StoreError:  # not created yet, or busy: look again
                pass
            time.sleep(0.05)
        assert batch.poll() is None, "the batch ended before the test saw a task finish"
        batch.send_signal(signal.SIGINT)
        out, err = batch.communicate(timeout=60)
    finally:
        batch.kill()
        batch.communicate()
        if reader is not None:
            reader.dispose()
    assert batch.returncode == 130, err
    assert out.endswith("stopped: the unfinished tasks were aborted; run it again to finish the rest\n")
    assert "Traceback" not in err
    records = Store.open(str(store)).tasks()
    assert len(records) == 36 and {r.state for r in records} == {"ABORTED", "SUCCESS"}


def test_user_tests_of_crunch_pass():
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLES)]
    out = subprocess.run(
        [*command, str(EXAMPLES / "test_crunch.py")], capture_output=True, text=True, timeout=120, cwd=EXAMPLES
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 passed" in out.stdout


def test_celery_example_aborts_crunch_on_a_real_worker(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "celery_crunch.py"), str(tmp_path)], capture_output=True, text=True,
        timeout=110, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "small: [0, 1, 4, 9, 16]" in lines and "still: ABORTED" in lines
    assert any(line.startswith("aborted after ") and line.endswith("state ABORTED") for line in lines)


def test_dashboard_batch_serves_its_page_and_stops_cleanly_on_ctrl_c(tmp_path):
    import json
    import re
    import signal
    import urllib.request

    store = tmp_path / "renders.sqlite"
    batch = subprocess.Popen([sys.executable, str(EXAMPLES / "dashboard.py"), str(store), "--seconds", "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", batch.stderr.readline()).group()
        with urllib.request.urlopen(url.replace("/?", "/api/snapshot?"), timeout=30) as reply:
            snap = json.loads(reply.read())
        assert snap["tasks"] and {t["name"] for t in snap["tasks"]} <= {"__main__.Render", "__main__.Upload"}
        batch.send_signal(signal.SIGINT)  # Ctrl-C: every unfinished task is aborted, and the script says so
        out, err = batch.communicate(timeout=60)
    finally:
        batch.kill()
        batch.communicate()
    assert batch.returncode == 130 and out.endswith("stopped: the unfinished tasks were aborted\n"), err
    assert "Traceback" not in err
    from localabort._store import Store

    states = {r.state for r in Store.open(str(store)).tasks()}
    assert "ABORTED" in states and states <= {"ABORTED", "SUCCESS", "FAILURE"}


def test_the_asyncio_service_aborts_the_job_of_a_client_that_disconnects(tmp_path):
    """examples/service.py under uvicorn, over real HTTP: a result, a job started and aborted, a client gone."""
    import json
    import re
    import signal
    import socket
    import time
    import urllib.request

    from localabort._store import Store

    store = str(tmp_path / "jobs.sqlite")
    server = subprocess.Popen([sys.executable, str(EXAMPLES / "service.py"), store], stderr=subprocess.PIPE,
                              text=True)  # fmt: skip

    def call(method, path):
        request = urllib.request.Request(url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def states():
        reader = Store(store, create=False)
        try:
            return {record.id: record.state for record in reader.tasks(outcomes=False)}
        finally:
            reader.dispose()

    def wait_state(task_id, state):
        deadline = time.monotonic() + 30
        while states().get(task_id) != state:
            assert time.monotonic() < deadline, (task_id, states())
            time.sleep(0.05)

    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", server.stderr.readline()).group()
        status, small = call("GET", "/crunch?n=4")
        assert status == 200 and small["state"] == "SUCCESS" and (small["count"], small["sum"]) == (4, 14)

        status, started = call("POST", "/jobs?n=1000000000")
        assert status == 202
        wait_state(started["id"], "STARTED")
        assert call("DELETE", f"/jobs/{started['id']}") == (200, {"id": started["id"], "aborted": True})
        wait_state(started["id"], "ABORTED")
        assert call("GET", "/jobs/no-such-job")[0] == 404

        host, port = url.rsplit("//", 1)[1].split(":")
        before = set(states())
        with socket.create_connection((host, int(port)), timeout=30) as client:
            client.sendall(b"GET /crunch?n=1000000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            deadline = time.monotonic() + 30
            while not [i for i, s in states().items() if i not in before and s == "STARTED"]:
                assert time.monotonic() < deadline, states()
                time.sleep(0.05)
        # the client is gone: the endpoint's await is cancelled, and the task aborted
        (gone,) = set(states()) - before
        wait_state(gone, "ABORTED")

        status, last = call("POST", "/jobs?n=1000000000")
        wait_state(last["id"], "STARTED")
        server.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn stops, and the job still running is aborted
        assert server.wait(30) == 130  # as a shell counts a Ctrl-C
        assert "Traceback" not in server.stderr.read()  # a client that left is no error
        assert states()[last["id"]] == "ABORTED"
        assert set(states().values()) <= {"SUCCESS", "ABORTED"}
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stderr.close()
