"""A demo batch: a few dozen abortable tasks, some of them aborted, all states recorded.

Run it with ``python examples/demo.py``. It uses the embedded default
store (a private SQLite file) unless you pass a path:
``python examples/demo.py batch.sqlite``, then watch that file from
another terminal with ``AbortableAsyncResult``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import sys
import time

from tqdm import tqdm

from localabort import AbortableTask, Executor, TaskAborted


class Crunch(AbortableTask):
    """Squares numbers, checking for an abort before each one."""

    def run(self, n: int) -> list:
        done = []
        for i in range(n):
            if self.is_aborted():  # cheap: call it as often as you like
                return done  # honoured abort -> state ABORTED
            done.append(i * i)
            self.progress(i + 1, n)
            time.sleep(0.0005)
        return done


def main(store: str | None = None) -> dict:
    sizes = [200 + 97 * i % 1500 for i in range(36)]
    with Executor(max_workers=2, store=store) as ex:
        futures = [ex.submit(Crunch, n) for n in sizes]
        # Abort every seventh task while it is still queued: it never starts.
        for fut in futures[7::7]:
            fut.abort()
        # Abort the first two once they are under way: they stop at their next check.
        for fut in futures[:2]:
            while fut.progress is None or fut.progress[0] < 100:
                time.sleep(0.01)
            fut.abort()
        with tqdm(total=len(futures), desc="batch", unit="task") as bar:
            for _ in concurrent.futures.as_completed(futures):
                bar.update()
        counts = collections.Counter(fut.state for fut in futures)
        for i, fut in enumerate(futures[:8]):
            try:
                outcome = f"{len(fut.result())} squares"
            except TaskAborted as exc:
                outcome = f"aborted after {len(exc.partial_result or [])} squares"
            print(f"task {i:2}  {fut.id}  {fut.state:8} {outcome}")
    print("final states:", dict(sorted(counts.items())))
    return counts


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
