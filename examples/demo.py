"""A demo batch: a few dozen abortable tasks, some of them aborted, all states recorded.

Run it with ``python examples/demo.py``. It uses the embedded default
store (a private SQLite file) unless you pass a path:
``python examples/demo.py batch.sqlite``. With a path, watch it from
another terminal (``localabort watch batch.sqlite``), press Ctrl-C to
stop it, and run it again: every task has a ``key``, so the tasks that
finished are not run twice.
"""

from __future__ import annotations

import collections
import concurrent.futures
import sys
import time

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
    with Executor(max_workers=2, store=store, progress=True) as ex:
        futures = [ex.apply_async(Crunch, (n,), key=f"square-{i}") for i, n in enumerate(sizes)]
        resumed = sum(fut.done() for fut in futures)
        if resumed:
            print(f"{resumed} task(s) finished in an earlier run: not run again")
        # Abort every seventh task while it is still queued: it never starts.
        for fut in futures[7::7]:
            fut.abort()
        # Abort the first two once they are under way: they stop at their next check.
        for fut in futures[:2]:
            while not fut.done() and (fut.progress is None or fut.progress[0] < 100):
                time.sleep(0.01)
            fut.abort()
        concurrent.futures.wait(futures)
        ex.shutdown()  # let the progress bars finish before printing
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
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
    except KeyboardInterrupt:  # Ctrl-C aborted the unfinished tasks, and the store holds each one's final state
        print("stopped: the unfinished tasks were aborted; run it again to finish the rest")
        raise SystemExit(130) from None
