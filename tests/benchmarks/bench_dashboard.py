"""The dashboard on a large store: ``python tests/benchmarks/bench_dashboard.py [--quick] [--chromium PATH]``.

Fills a store with 1,000,000 tasks (``--quick``: 100,000) as ``bench_status``
does, starts the real ``localabort serve`` on it, and measures:

- the page's load time in headless Chromium (Playwright): from the start
  of navigation to the first snapshot drawn (the page sets
  ``data-rendered``), the first load after the server started (the
  finished tasks counted afresh) and the next ones;
- one snapshot through the API: the newest page, and a page deep in the
  store (keyset paging: the cursor of its 999,000th newest task);
- the server's CPU while one page stays open (its live stream), as a share
  of one core.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.bench_status import fill  # noqa: E402

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # fmt: skip


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        reply.read()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    quick = "--quick" in sys.argv
    chromium = sys.argv[sys.argv.index("--chromium") + 1] if "--chromium" in sys.argv else (
        os.environ.get("LOCALABORT_TEST_CHROMIUM") or "/usr/bin/chromium")  # fmt: skip
    tasks = 100_000 if quick else 1_000_000
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.sqlite")
        began = time.perf_counter()
        fill(path, tasks)
        print(f"The dashboard on a store of {tasks:,} tasks (filled in {time.perf_counter() - began:.0f} s), "
              f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")  # fmt: skip
        print()
        server = subprocess.Popen([sys.executable, "-m", "localabort", "serve", path, "--port", "0"],
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
        try:
            url = re.search(r"http://\S+", server.stderr.readline()).group()
            api = url.replace("/?", "/api/snapshot?")
            loads = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                for _ in range(6):
                    page = browser.new_page()
                    page.goto(url)
                    page.wait_for_selector("body[data-rendered]", timeout=60_000)
                    loads.append(float(page.get_attribute("body", "data-rendered")))
                    page.close()
                    time.sleep(1)
                newest = [timed_get(api) for _ in range(10)]
                snap = json.loads(urllib.request.urlopen(api, timeout=60).read())
                deep_at = snap["tasks"][0]["submitted_at"] - (tasks - 1000)  # bench_status: one task a second
                deep = f"{api}&before={urllib.parse.quote(f'{deep_at!r}:')}"
                deep_times = [timed_get(deep) for _ in range(10)]
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("body[data-rendered]", timeout=60_000)
                time.sleep(2)
                cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
                time.sleep(20)
                share = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
                page.close()
                browser.close()
        finally:
            server.terminate()
            server.wait()
            server.stderr.close()
        common.table(
            ["figure", "measured"],
            [
                ["page load, first after the server started (counts afresh)", f"{loads[0]:,.0f} ms"],
                ["page load, the next five (median, min-max)", common.spread(loads[1:], "{:,.0f}") + " ms"],
                ["one snapshot, newest page (API, median, min-max)", common.spread(newest, "{:,.0f}") + " ms"],
                [f"one snapshot, a page {tasks - 1000:,} tasks deep", common.spread(deep_times, "{:,.0f}") + " ms"],
                ["server CPU with one page open (its live stream)", f"{share:.0%} of a core"],
            ],
        )


if __name__ == "__main__":
    main()
