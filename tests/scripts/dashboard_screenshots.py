"""The dashboard's screenshots in docs/img/: ``python tests/scripts/dashboard_screenshots.py [CHROMIUM]``.

Runs a real batch (``examples/dashboard.py``'s tasks) beside a finished one
on one store, opens the page in headless Chromium through Playwright, and
saves the page and one failed task's detail. Needs the test extra.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]

from dashboard import Render, Upload  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from localabort import Executor  # noqa: E402
from localabort._web import Dashboard  # noqa: E402
from tests.test_web import CHROMIUM_FLAGS  # noqa: E402

OUT = os.path.join(ROOT, "docs", "img")


def main(chromium: str) -> None:
    os.makedirs(OUT, exist_ok=True)
    store = os.path.join(tempfile.mkdtemp(), "renders.sqlite")
    with Executor(max_workers=2, store=store) as earlier:  # a batch that ran before: a second card
        for i in range(6):
            earlier.submit(Render, f"intro-{i}", frames=10, fps=200)
    ex = Executor(max_workers=2, store=store, mp_context="fork")
    futures = [ex.submit(Render, "broken-0", frames=30)]
    futures += [ex.submit(Render, f"scene-{i}", frames=300 + 40 * i) for i in range(1, 12)]
    futures += [ex.submit(Upload, f"scene-{i}.mp4", chunks=400) for i in range(3)]
    futures[5].abort()  # queued: it never runs
    board = Dashboard(ex.store).start()
    try:
        time.sleep(4)
        futures[1].abort()  # running: it stops at its next check
        time.sleep(2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(board.url)
            page.wait_for_selector("body[data-rendered]")
            time.sleep(1)
            page.screenshot(path=os.path.join(OUT, "dashboard.png"))
            page.locator(f'tr[data-id="{futures[0].id}"]').click()
            page.wait_for_selector("#d-log:not([hidden])")
            time.sleep(0.5)
            page.screenshot(path=os.path.join(OUT, "dashboard-task.png"))
            browser.close()
    finally:
        board.stop()
        ex.abort_all()
        ex.shutdown()
    print(f"saved {OUT}/dashboard.png and dashboard-task.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOCALABORT_TEST_CHROMIUM", "/usr/bin/chromium"))
